// Package flagfile sets a command's flags from a YAML file, so that every
// flag of a command is also a key of its configuration file and a new flag
// is one at once. A flag is a key by its name: --request-timeout is
// request_timeout, and --turn-listen is turn.listen (a mapping) when
// "turn" is one of the Schema's sections. The file is read strictly: an
// unknown key, a key given twice and a value the flag refuses are each
// named with their line, all at once. A flag given on the command line
// wins over the file.
package flagfile

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/uploadbox/uploadbox/internal/confcheck"
)

// Schema maps flags to keys.
type Schema struct {
	// Sections are flag name prefixes that are mappings in the file:
	// with "turn", --turn-relay-ports is the key relay_ports under turn.
	Sections []string
	// Rename gives a flag another key, for a key that reads better than
	// the flag (a list: "hostname": "hostnames").
	Rename map[string]string
	// Skip names flags that are no keys (the config file's own flag).
	Skip []string
}

// Key returns the key of the flag named name in the file, dotted.
func (s Schema) Key(name string) string {
	if k, ok := s.Rename[name]; ok {
		return k
	}
	for _, sec := range s.Sections {
		if rest, ok := strings.CutPrefix(name, sec+"-"); ok {
			return sec + "." + strings.ReplaceAll(rest, "-", "_")
		}
	}
	return strings.ReplaceAll(name, "-", "_")
}

// keys maps each key to its flag.
func (s Schema) keys(fs *pflag.FlagSet) map[string]*pflag.Flag {
	m := map[string]*pflag.Flag{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && !slices.Contains(s.Skip, f.Name) {
			m[s.Key(f.Name)] = f
		}
	})
	return m
}

// Apply reads the file at path and sets each flag of fs that the command
// line did not set from its key. It returns the line of each flag it set;
// the *confcheck.Error lists every problem of the file.
func (s Schema) Apply(fs *pflag.FlagSet, path string) (map[string]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	lines, ps := s.apply(fs, data)
	if len(ps) > 0 {
		return nil, &confcheck.Error{File: path, Problems: ps}
	}
	return lines, nil
}

func (s Schema) apply(fs *pflag.FlagSet, data []byte) (map[string]int, []confcheck.Problem) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, []confcheck.Problem{{Key: "(file)", Msg: fmt.Sprintf("not valid YAML: %v", err)}}
	}
	if len(doc.Content) == 0 {
		return map[string]int{}, nil // an empty file: every default
	}
	a := applier{schema: s, keys: s.keys(fs), lines: map[string]int{}}
	a.mapping(doc.Content[0], "")
	return a.lines, a.problems
}

type applier struct {
	schema   Schema
	keys     map[string]*pflag.Flag
	lines    map[string]int
	problems []confcheck.Problem
}

func (a *applier) fail(key string, line int, format string, args ...any) {
	a.problems = append(a.problems, confcheck.Problem{Key: key, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// names are the keys known under prefix ("" for the top level): leaves
// and sections.
func (a *applier) names(prefix string) []string {
	seen := map[string]bool{}
	for k := range a.keys {
		if prefix != "" {
			var ok bool
			if k, ok = strings.CutPrefix(k, prefix+"."); !ok {
				continue
			}
		}
		k, _, _ = strings.Cut(k, ".")
		seen[k] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (a *applier) mapping(n *yaml.Node, prefix string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "section:" with nothing: every default
	}
	if n.Kind != yaml.MappingNode {
		where := prefix
		if where == "" {
			where = "(top level)"
		}
		a.fail(where, n.Line, "expected a mapping of keys")
		return
	}
	names := a.names(prefix)
	given := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := confcheck.KeyOf(prefix, k.Value)
		switch {
		case given[key]:
			a.fail(key, k.Line, "given twice")
			continue
		case !slices.Contains(names, k.Value):
			a.fail(key, k.Line, "%s", confcheck.UnknownKey(k.Value, prefix, names))
			continue
		}
		given[key] = true
		if f, ok := a.keys[key]; ok {
			a.value(f, key, v)
		} else {
			a.mapping(v, key)
		}
	}
}

// value sets flag f from the file's node v at key, unless the command
// line set it.
func (a *applier) value(f *pflag.Flag, key string, v *yaml.Node) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	var vals []string
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		return // "key:" with nothing: the default
	case v.Kind == yaml.ScalarNode:
		vals = []string{v.Value}
	case v.Kind == yaml.SequenceNode:
		if _, ok := f.Value.(pflag.SliceValue); !ok {
			a.fail(key, v.Line, "takes one value, not a list")
			return
		}
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode {
				a.fail(key, item.Line, "a list of plain values is expected here")
				return
			}
			vals = append(vals, item.Value)
		}
	default:
		a.fail(key, v.Line, "expected a value, not a mapping")
		return
	}
	if f.Changed {
		return // the command line wins
	}
	if f.Value.Type() == "duration" {
		for i, s := range vals {
			d, err := confcheck.ParseDuration(s)
			if err != nil {
				a.fail(key, v.Line, "%v", err)
				return
			}
			vals[i] = d.String()
		}
	}
	if err := set(f, vals); err != nil {
		if want, ok := kinds[f.Value.Type()]; ok {
			a.fail(key, v.Line, "%q is not %s", strings.Join(vals, ", "), want)
		} else {
			a.fail(key, v.Line, "%q: %v", strings.Join(vals, ", "), err)
		}
		return
	}
	a.lines[f.Name] = v.Line
}

// kinds name what a flag of a pflag type takes.
var kinds = map[string]string{
	"int": "a whole number", "int64": "a whole number", "uint": "a whole number",
	"float64": "a number", "bool": "true or false",
}

// set gives f the values: all of them to a list flag, the one to another.
func set(f *pflag.Flag, vals []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return sv.Replace(vals)
	}
	if len(vals) != 1 {
		return errors.New("takes one value")
	}
	return f.Value.Set(vals[0])
}

// Args are the command-line arguments that give each flag of fs the
// command line set its value again (--name=value, a list flag once per
// value): with them a fresh flag set parses to what fs holds.
func Args(fs *pflag.FlagSet) []string {
	args := []string{} // never nil: cobra reads os.Args for nil
	fs.Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			vals := sv.GetSlice()
			if len(vals) == 0 {
				args = append(args, "--"+f.Name+"=")
			}
			for _, v := range vals {
				args = append(args, "--"+f.Name+"="+v)
			}
			return
		}
		args = append(args, "--"+f.Name+"="+f.Value.String())
	})
	return args
}

// Differ lists the flags (by key) whose values differ between two flag
// sets made by the same code.
func (s Schema) Differ(a, b *pflag.FlagSet) []string {
	var out []string
	a.VisitAll(func(f *pflag.Flag) {
		if g := b.Lookup(f.Name); g != nil && g.Value.String() != f.Value.String() && f.Name != "help" && !slices.Contains(s.Skip, f.Name) {
			out = append(out, s.Key(f.Name))
		}
	})
	return out
}

// Where names the file's key and line in err when err is about a flag the
// file set (its message names --flag): a value the flag took but a later
// check refused. Other errors are returned as they are.
func (s Schema) Where(err error, path string, lines map[string]int) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	// The flag named first is the one the message is about.
	first, at := "", len(msg)
	for name := range lines {
		if i := mention(msg, "--"+name); i >= 0 && (i < at || i == at && name < first) {
			first, at = name, i
		}
	}
	if first == "" {
		return err
	}
	return fmt.Errorf("%s line %d, %s: %w", path, lines[first], s.Key(first), err)
}

// mention returns where msg names flag (not a longer flag it begins),
// or -1.
func mention(msg, flag string) int {
	for i := 0; ; {
		j := strings.Index(msg[i:], flag)
		if j < 0 {
			return -1
		}
		end := i + j + len(flag)
		if end == len(msg) || !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789-", rune(msg[end])) {
			return i + j
		}
		i = end
	}
}
