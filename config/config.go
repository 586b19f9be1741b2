// Package config defines enclaved's configuration: one TOML file format,
// ENCLAVED_* environment overrides and -set key=value flags, applied in that
// order over the defaults, then validated with errors that name the key.
//
// It is used on both sides of the trust boundary. Inside the enclave only the
// configuration baked into the measured image may be trusted; anything the
// parent supplies is input to validate, never a source of secrets.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// EnvPrefix starts every environment override: log.level is ENCLAVED_LOG_LEVEL.
const EnvPrefix = "ENCLAVED_"

// Config is the whole configuration. Keys are the toml tags, dotted by table.
type Config struct {
	// DataDir holds the database, keys and caches (dev mode).
	DataDir string `toml:"data_dir"`
	Log     Log    `toml:"log"`
	Nostr   Nostr  `toml:"nostr"`
	Dev     Dev    `toml:"dev"`
}

// Log configures structured logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text, json
}

// Nostr configures the instance's relays.
type Nostr struct {
	// Relays the instance reads from and publishes to. Empty in dev mode means
	// its embedded relay.
	Relays []string `toml:"relays"`
}

// Dev configures what only dev mode runs.
type Dev struct {
	// RelayListen is the embedded relay's listen address.
	RelayListen string `toml:"relay_listen"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		DataDir: "~/.enclaved",
		Log:     Log{Level: "info", Format: "text"},
		Dev:     Dev{RelayListen: "127.0.0.1:7447"},
	}
}

// Sources says where Load reads from, in increasing precedence.
type Sources struct {
	File    string   // TOML file; "" for none
	Environ []string // KEY=VALUE pairs, as os.Environ returns
	Sets    []string // key=value pairs from -set flags
}

// Load applies file, environment and flags over the defaults, expands ~ in
// paths and validates the result.
func Load(src Sources) (Config, error) {
	c := Default()
	if src.File != "" {
		if err := c.LoadFile(src.File); err != nil {
			return c, err
		}
	}
	if err := c.ApplyEnv(src.Environ); err != nil {
		return c, err
	}
	for _, kv := range src.Sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("-set %q: want key=value", kv)
		}
		if err := c.Set(strings.TrimSpace(k), v); err != nil {
			return c, fmt.Errorf("-set %w", err)
		}
	}
	if strings.HasPrefix(c.DataDir, "~/") || c.DataDir == "~" {
		home, err := os.UserHomeDir()
		if err != nil {
			return c, fmt.Errorf("data_dir: cannot expand ~: %w", err)
		}
		c.DataDir = filepath.Join(home, strings.TrimPrefix(c.DataDir, "~"))
	}
	return c, c.Validate()
}

// LoadFile decodes a TOML file over c. Unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return c.decode(path, b)
}

func (c *Config) decode(name string, b []byte) error {
	// Parse into a generic tree first, then assign key by key, so that every
	// error (unknown key, wrong type) names the dotted key.
	var tree map[string]any
	if err := toml.Unmarshal(b, &tree); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return fmt.Errorf("config file %s:%d:%d: %s", name, row, col, derr.Error())
		}
		return fmt.Errorf("config file %s: %w", name, err)
	}
	if err := assignTree(reflect.ValueOf(c).Elem(), "", tree); err != nil {
		return fmt.Errorf("config file %s: %w", name, err)
	}
	return nil
}

func assignTree(v reflect.Value, prefix string, tree map[string]any) error {
	fields := map[string]reflect.Value{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			fields[tag] = v.Field(i)
		}
	}
	names := make([]string, 0, len(tree))
	for k := range tree {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		key, val := prefix+k, tree[k]
		f, ok := fields[k]
		if !ok {
			return fmt.Errorf("unknown key %s (known keys: %s)", key, strings.Join(Keys(), ", "))
		}
		if err := assign(f, key, val); err != nil {
			return err
		}
	}
	return nil
}

func assign(f reflect.Value, key string, val any) error {
	wrong := func(want string) error {
		return fmt.Errorf("%s: want %s, got %T %v", key, want, val, val)
	}
	switch f.Kind() {
	case reflect.Struct:
		sub, ok := val.(map[string]any)
		if !ok {
			return wrong("a table")
		}
		return assignTree(f, key+".", sub)
	case reflect.String:
		s, ok := val.(string)
		if !ok {
			return wrong("a string")
		}
		f.SetString(s)
	case reflect.Bool:
		b, ok := val.(bool)
		if !ok {
			return wrong("true or false")
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := val.(int64)
		if !ok {
			return wrong("a whole number")
		}
		f.SetInt(n)
	case reflect.Slice:
		list, ok := val.([]any)
		if !ok {
			return wrong("a list of strings")
		}
		items := make([]string, 0, len(list))
		for _, it := range list {
			s, ok := it.(string)
			if !ok {
				return wrong("a list of strings")
			}
			items = append(items, s)
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("%s: cannot be set from a file", key)
	}
	return nil
}

// ApplyEnv applies ENCLAVED_<KEY> variables for every known key. Variables
// with the prefix that name no key are left alone: other tools share it.
func (c *Config) ApplyEnv(environ []string) error {
	byEnv := map[string]string{}
	for _, k := range Keys() {
		byEnv[EnvName(k)] = k
	}
	for _, kv := range environ {
		name, val, _ := strings.Cut(kv, "=")
		key, ok := byEnv[name]
		if !ok {
			continue
		}
		if err := c.Set(key, val); err != nil {
			return fmt.Errorf("environment %s: %w", name, err)
		}
	}
	return nil
}

// EnvName is the environment variable that overrides key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Keys lists every configuration key, sorted.
func Keys() []string {
	var keys []string
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(k string, _ reflect.Value) { keys = append(keys, k) })
	sort.Strings(keys)
	return keys
}

func walk(v reflect.Value, prefix string, fn func(key string, field reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		if f := v.Field(i); f.Kind() == reflect.Struct {
			walk(f, key+".", fn)
		} else {
			fn(key, f)
		}
	}
}

// Set assigns the string form of a value to key: lists are comma-separated.
func (c *Config) Set(key, value string) error {
	var field reflect.Value
	walk(reflect.ValueOf(c).Elem(), "", func(k string, f reflect.Value) {
		if k == key {
			field = f
		}
	})
	if !field.IsValid() {
		return fmt.Errorf("%s: unknown key (known keys: %s)", key, strings.Join(Keys(), ", "))
	}
	switch field.Kind() {
	case reflect.String:
		field.SetString(value)
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", key, value)
		}
		field.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a whole number", key, value)
		}
		field.SetInt(n)
	case reflect.Slice:
		var items []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		field.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("%s: cannot be set from text", key)
	}
	return nil
}

// Validate reports every invalid key, each naming the key and why.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for i, r := range c.Nostr.Relays {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			bad("nostr.relays", "entry %d %q is not a ws:// or wss:// URL", i+1, r)
		}
	}
	if c.Dev.RelayListen != "" {
		if _, port, err := net.SplitHostPort(c.Dev.RelayListen); err != nil {
			bad("dev.relay_listen", "%q is not host:port", c.Dev.RelayListen)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("dev.relay_listen", "port %q is not a number from 0 to 65535", port)
		}
	}
	return errors.Join(errs...)
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}
