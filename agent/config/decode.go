package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/uploadbox/uploadbox/internal/confcheck"
)

// decodeLines reads YAML into c key by key, so that every unknown key and
// every bad value is reported with its dotted path and line, not just the
// first. It also returns the line of every key the file sets (list items
// as "key[i]"), so that the value checks run after it can name it too.
func decodeLines(data []byte, c *Config) ([]Problem, map[string]int) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []Problem{{Key: "(file)", Msg: fmt.Sprintf("not valid YAML: %v", err)}}, nil
	}
	if len(doc.Content) == 0 {
		return nil, nil // an empty file: all defaults
	}
	var ps []Problem
	lines := map[string]int{}
	decodeNode(doc.Content[0], reflect.ValueOf(c).Elem(), "", &ps, lines)
	return ps, lines
}

func keyOf(prefix, name string) string { return confcheck.KeyOf(prefix, name) }

// fields maps the yaml keys of a struct type to field indexes.
func fields(t reflect.Type) (map[string]int, []string) {
	m := map[string]int{}
	var names []string
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		m[tag] = i
		names = append(names, tag)
	}
	sort.Strings(names)
	return m, names
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func decodeNode(n *yaml.Node, v reflect.Value, key string, ps *[]Problem, lines map[string]int) {
	where := key
	if where == "" {
		where = "(top level)"
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	isStruct := v.Kind() == reflect.Struct && !reflect.PointerTo(v.Type()).Implements(unmarshalerType)
	switch {
	case isStruct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.MappingNode {
			*ps = append(*ps, Problem{Key: where, Line: n.Line, Msg: "expected a mapping of keys"})
			return
		}
		idx, names := fields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			fk := keyOf(key, k.Value)
			fi, ok := idx[k.Value]
			if !ok {
				*ps = append(*ps, Problem{Key: fk, Line: k.Line, Msg: confcheck.UnknownKey(k.Value, key, names)})
				continue
			}
			if seen[k.Value] {
				*ps = append(*ps, Problem{Key: fk, Line: k.Line, Msg: "given twice"})
				continue
			}
			seen[k.Value] = true
			lines[fk] = k.Line
			decodeNode(val, v.Field(fi), fk, ps, lines)
		}
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			*ps = append(*ps, Problem{Key: where, Line: n.Line, Msg: "expected a list"})
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ik := fmt.Sprintf("%s[%d]", key, i)
			lines[ik] = item.Line
			decodeNode(item, s.Index(i), ik, ps, lines)
		}
		v.Set(s)
	default:
		if n.Kind == yaml.SequenceNode {
			for i, item := range n.Content {
				lines[fmt.Sprintf("%s[%d]", key, i)] = item.Line
			}
		}
		p := reflect.New(v.Type())
		if err := n.Decode(p.Interface()); err != nil {
			*ps = append(*ps, Problem{Key: where, Line: n.Line, Msg: cleanYAMLError(err)})
			return
		}
		v.Set(p.Elem())
	}
}

func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "line ") {
		msg = msg[i+2:]
	}
	return msg
}

// applyEnv applies UPLOADBOX_SECTION_KEY=value overrides. The variable name
// is the dotted key upper-cased with dots and underscores both as "_"; a
// variable under the prefix that names no key is a problem, so a typo does
// not go unnoticed.
func applyEnv(c *Config, env []string, lines map[string]int) []Problem {
	leaves := map[string]string{} // ENV name -> dotted key
	collectLeaves(reflect.TypeOf(*c), "", leaves)
	var ps []Problem
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		if name == EnvPrefix+"CONFIG" || name == EnvPrefix+"VECTORS" {
			continue // not config keys: the config path itself, test vectors
		}
		key, ok := leaves[strings.TrimPrefix(name, EnvPrefix)]
		if !ok {
			ps = append(ps, Problem{Key: name, Msg: "environment override names no config key"})
			continue
		}
		v := reflect.ValueOf(c).Elem()
		for _, part := range strings.Split(key, ".") {
			idx, _ := fields(v.Type())
			v = v.Field(idx[part])
		}
		p := reflect.New(v.Type())
		if err := yaml.Unmarshal([]byte(val), p.Interface()); err != nil {
			ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf("from %s: %s", name, cleanYAMLError(err))})
			continue
		}
		v.Set(p.Elem())
		delete(lines, key) // the value no longer comes from the file
	}
	return ps
}

func collectLeaves(t reflect.Type, prefix string, out map[string]string) {
	idx, names := fields(t)
	for _, n := range names {
		f := t.Field(idx[n])
		key := keyOf(prefix, n)
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(unmarshalerType) {
			collectLeaves(f.Type, key, out)
			continue
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
			continue // lists of servers are set in the file only
		}
		out[strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = key
	}
}

// Duration is a time.Duration written as "10s", "60m", "2h" or "180d".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string {
	td := time.Duration(d)
	if td >= 24*time.Hour && td%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", td/(24*time.Hour))
	}
	return td.String()
}

// UnmarshalYAML parses a duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as text.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ParseDuration accepts Go durations and whole days ("180d").
func ParseDuration(s string) (time.Duration, error) { return confcheck.ParseDuration(s) }

// Size is a byte count written as "8GiB", "512MiB", "500MB" or a plain number.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"KB", 1e3}, {"B", 1},
}

func (s Size) String() string {
	for _, u := range sizeUnits[:4] {
		if s != 0 && int64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalYAML parses a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// MarshalYAML writes the size as text.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// ParseSize parses "8GiB", "500MB", "1.5GiB" or a number of bytes.
func ParseSize(str string) (int64, error) {
	t := strings.TrimSpace(str)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || f < 0 {
				break
			}
			return int64(f * float64(u.mult)), nil
		}
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil && n >= 0 {
		return n, nil
	}
	return 0, fmt.Errorf("%q is not a size: write e.g. 8GiB, 512MiB or 500MB", str)
}

// Bitrate is bits per second written as "2500k", "2.5M" or a plain number.
type Bitrate int

func (b Bitrate) String() string {
	switch {
	case b >= 1_000_000 && b%1_000_000 == 0:
		return fmt.Sprintf("%dM", b/1_000_000)
	case b >= 1000 && b%1000 == 0:
		return fmt.Sprintf("%dk", b/1000)
	}
	return strconv.Itoa(int(b))
}

// UnmarshalYAML parses a bitrate.
func (b *Bitrate) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseBitrate(n.Value)
	if err != nil {
		return err
	}
	*b = Bitrate(v)
	return nil
}

// MarshalYAML writes the bitrate as text.
func (b Bitrate) MarshalYAML() (any, error) { return b.String(), nil }

// ParseBitrate parses "2500k", "2.5M" or bits per second.
func ParseBitrate(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "k"), strings.HasSuffix(t, "K"):
		mult, t = 1e3, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		mult, t = 1e6, t[:len(t)-1]
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("%q is not a bitrate: write e.g. 2500k or 2.5M", s)
	}
	return int(f * mult), nil
}
