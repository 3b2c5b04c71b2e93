// Command credfactory is the one binary of the credential factory: init runs
// the key ceremony, serve runs the HTTPS front end, version says what was
// built. Server-side commands take --data-dir and --config; every setting
// also has a CREDFACTORY_<SECTION>_<KEY> override (see --help).
package main
