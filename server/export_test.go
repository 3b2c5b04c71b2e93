package server

import "net"

// SetStatusListener replaces the status listener after Listen, so a test
// can make it fail.
func SetStatusListener(s *Server, ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statusLn = ln
}
