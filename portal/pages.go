package portal

// PageRoutes is the server-rendered web UI (html/template). Placeholder
// until the pages land.
func (p *Portal) PageRoutes() []Route { return nil }
