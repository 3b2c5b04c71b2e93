// Package config is the one description of every setting credfactory has:
// the YAML file (strictly decoded, so a misspelt key is an error, not a
// silently ignored default), the CREDFACTORY_<SECTION>_<KEY> environment
// overrides, the defaults derived from the data directory, and the --help
// text that lists them all. It is generated from the struct tags, so the
// file format, the env names and the help can never disagree.
package config
