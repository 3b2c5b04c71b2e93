package mef_test

import (
	"testing"

	"github.com/credfactory/credfactory/httpapi/apidoc"
	"github.com/credfactory/credfactory/mef"
)

func TestRoutesAreDocumented(t *testing.T) {
	apidoc.Check(t, mef.New(mef.Config{}, nil, nil, nil, nil, nil, nil, nil, nil).Routes())
}
