package portal

import "time"

// SetClock replaces the portal's clock, for tests of what waits on it.
func SetClock(p *Portal, now func() time.Time) { p.now = now }
