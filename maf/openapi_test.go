package maf_test

import (
	"testing"

	"github.com/credfactory/credfactory/httpapi/apidoc"
	"github.com/credfactory/credfactory/maf"
)

func TestRoutesAreDocumented(t *testing.T) { apidoc.Check(t, maf.NewAPI(nil, nil, nil).Routes()) }
