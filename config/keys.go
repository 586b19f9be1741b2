package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

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
	tables(v, func(tag string, f reflect.Value) {
		key := prefix + tag
		if f.Kind() == reflect.Struct {
			walk(f, key+".", fn)
		} else {
			fn(key, f)
		}
	})
}

// tables calls fn for each tagged field of the struct v, by its toml tag;
// the fields of an embedded struct without a tag count as v's own.
func tables(v reflect.Value, fn func(tag string, field reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("toml")
		if sf.Anonymous && tag == "" && sf.Type.Kind() == reflect.Struct {
			tables(v.Field(i), fn)
			continue
		}
		if tag == "" || tag == "-" {
			continue
		}
		fn(tag, v.Field(i))
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
	if field.Type() == durationType {
		return setDuration(field, key, value)
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

var durationType = reflect.TypeOf(time.Duration(0))

func setDuration(f reflect.Value, key, s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf(`%s: %q is not a duration such as "10m" or "72h"`, key, s)
	}
	f.SetInt(int64(d))
	return nil
}
