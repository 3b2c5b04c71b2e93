package portal_test

import (
	"testing"

	"github.com/credfactory/credfactory/httpapi/apidoc"
	"github.com/credfactory/credfactory/portal"
)

// Every page action has its JSON twin under /api/v1/, documented there.
func TestAPIRoutesAreDocumented(t *testing.T) {
	apidoc.Check(t, portal.New(portal.Config{}, nil, nil, nil, nil, nil).APIRoutes())
}
