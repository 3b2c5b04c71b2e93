package castatus

import (
	"strings"
	"testing"

	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/httpapi/apidoc"
)

func TestRoutesAreDocumented(t *testing.T) {
	svc, err := New(catest.New(t).CA, nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The catch-all {request:*} is documented as {request}.
	var routes []httpapi.Route
	for _, r := range svc.Routes() {
		r.Pattern = strings.ReplaceAll(r.Pattern, ":*}", "}")
		routes = append(routes, r)
	}
	apidoc.Check(t, routes)
}
