package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Setting is one leaf of Config: its YAML path, its environment variable,
// its help text and where it lives in a Config value.
type Setting struct {
	Key  string // e.g. "hsm.max_sessions"
	Env  string // e.g. "CREDFACTORY_HSM_MAX_SESSIONS"
	Help string
	path []int
}

// Settings lists every setting in file order.
func Settings() []Setting {
	var out []Setting
	walk(reflect.TypeOf(Config{}), nil, "", "", &out)
	return out
}

// walk lists t's leaves. A struct field's own help (e.g. limits.login_source's)
// prefixes its leaves' help (rate, burst), which would not say whose they are.
func walk(t reflect.Type, index []int, prefix, helpPrefix string, out *[]Setting) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		if opts == "inline" {
			walk(f.Type, idx, prefix, helpPrefix, out)
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			hp := helpPrefix
			if h := f.Tag.Get("help"); h != "" {
				hp = h + ": "
			}
			walk(f.Type, idx, key, hp, out)
			continue
		}
		*out = append(*out, Setting{
			Key:  key,
			Env:  EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_")),
			Help: helpPrefix + f.Tag.Get("help"),
			path: idx,
		})
	}
}

// Value is the setting's current value in c, formatted as it would be set.
func (s Setting) Value(c *Config) string {
	v := reflect.ValueOf(c).Elem().FieldByIndex(s.path)
	switch x := v.Interface().(type) {
	case []string:
		return strings.Join(x, ",")
	case time.Duration:
		return x.String()
	}
	return fmt.Sprint(v.Interface())
}

func (s Setting) set(c *Config, raw string) error {
	v := reflect.ValueOf(c).Elem().FieldByIndex(s.path)
	switch v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	case []string:
		var list []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		v.Set(reflect.ValueOf(list))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(n))
	case reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return err
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return err
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}

// applyEnv sets every setting whose variable is present. An unparsable value
// is an error naming the variable (never echoing a value: some are paths to
// secrets, and a misplaced secret must not reach a log).
func applyEnv(c *Config, lookup func(string) (string, bool)) error {
	for _, s := range Settings() {
		raw, ok := lookup(s.Env)
		if !ok {
			continue
		}
		if err := s.set(c, raw); err != nil {
			return fmt.Errorf("%s: %w", s.Env, err)
		}
	}
	return nil
}

// Help lists every setting with its variable, default and meaning, for
// --help.
func Help() string {
	def := Default()
	var b strings.Builder
	b.WriteString("Settings (config file key, environment override, default):\n")
	for _, s := range Settings() {
		val := s.Value(&def)
		if val == "" {
			val = `""`
		}
		fmt.Fprintf(&b, "  %s\n      %s (default %s)\n      %s\n", s.Key, s.Env, val, s.Help)
	}
	b.WriteString("  Secrets are never settings: the HSM PIN comes from CREDFACTORY_HSM_PIN or the file hsm.pin_file names.\n")
	b.WriteString("  Empty hsm.pin_file and hsm.softhsm2_conf default to files under <data-dir>/hsm when hsm.embedded is on.\n")
	return b.String()
}
