package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// NewManCommand writes a manual page (roff, section 1) for every command
// of the tree it is added to. It is hidden: scripts/deb.sh runs it at
// build time and the packages install the pages gzipped.
func NewManCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages (section 1) into DIR",
		Hidden: true,
		Args:   Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := WriteManPages(cmd.Root(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d manual pages to %s\n", n, args[0])
			return nil
		},
	}
}

// WriteManPages writes NAME.1 into dir for root and every available
// command below it, named by its path with dashes ("uploadbox-queue-list.1"),
// and returns how many it wrote.
func WriteManPages(root *cobra.Command, dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("manual pages: %w", err)
	}
	n := 0
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		path := filepath.Join(dir, manName(c)+".1")
		if err := os.WriteFile(path, ManPage(c), 0o644); err != nil {
			return fmt.Errorf("manual pages: %w", err)
		}
		n++
		for _, sub := range manChildren(c) {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	return n, walk(root)
}

// manChildren is what gets a page of its own: every command a user can
// run or group, without help.
func manChildren(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() {
			out = append(out, sub)
		}
	}
	return out
}

func manName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "-")
}

// ManPage renders one command's manual page.
func ManPage(c *cobra.Command) []byte {
	var b bytes.Buffer
	name := manName(c)
	fmt.Fprintf(&b, ".TH %s 1 \"\" \"%s %s\" \"User Commands\"\n", roffQuoted(strings.ToUpper(name)), c.Root().Name(), roffEscape(Version))
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", roffEscape(name), roffEscape(c.Short))
	b.WriteString(".SH SYNOPSIS\n")
	fmt.Fprintf(&b, ".B %s\n", roffEscape(c.CommandPath()))
	if rest := strings.TrimSpace(strings.TrimPrefix(c.UseLine(), c.CommandPath())); rest != "" {
		b.WriteString(roffLine(rest) + "\n")
	}
	b.WriteString(".SH DESCRIPTION\n")
	desc := c.Long
	if desc == "" {
		desc = c.Short
	}
	b.WriteString(roffText(desc))
	if c.Example != "" {
		b.WriteString(".SH EXAMPLES\n.nf\n")
		b.WriteString(roffText(c.Example))
		b.WriteString(".fi\n")
	}
	manFlags(&b, "OPTIONS", c.NonInheritedFlags())
	manFlags(&b, "OPTIONS INHERITED FROM PARENT COMMANDS", c.InheritedFlags())
	var see []*cobra.Command
	if c.HasParent() {
		see = append(see, c.Parent())
	}
	see = append(see, manChildren(c)...)
	if len(see) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		for i, s := range see {
			sep := ","
			if i == len(see)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, ".BR %s (1)%s\n", roffEscape(manName(s)), sep)
		}
	}
	return b.Bytes()
}

// manFlags writes one tagged paragraph per visible flag.
func manFlags(b *bytes.Buffer, title string, fs *pflag.FlagSet) {
	if !fs.HasAvailableFlags() {
		return
	}
	fmt.Fprintf(b, ".SH %s\n", title)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		varname, usage := pflag.UnquoteUsage(f)
		tag := `\fB\-\-` + roffEscape(f.Name) + `\fR`
		if f.Shorthand != "" && f.ShorthandDeprecated == "" {
			tag = `\fB\-` + roffEscape(f.Shorthand) + `\fR, ` + tag
		}
		if varname != "" {
			tag += ` \fI` + roffEscape(varname) + `\fR`
		}
		if showDefault(f) {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		b.WriteString(".TP\n" + tag + "\n" + roffText(usage))
	})
}

// showDefault is whether a flag's default says more than its type's zero.
func showDefault(f *pflag.Flag) bool {
	switch f.DefValue {
	case "", "false", "0", "[]", "0s":
		return false
	}
	return true
}

// roffText turns plain text into roff: lines are filled, a blank line
// starts a paragraph, an indented line is kept as it is.
func roffText(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			b.WriteString(".PP\n")
		case line[0] == ' ' || line[0] == '\t':
			b.WriteString(".br\n" + roffLine(line) + "\n")
		default:
			b.WriteString(roffLine(line) + "\n")
		}
	}
	return b.String()
}

// roffLine escapes one line of text so no character starts a request.
func roffLine(s string) string {
	s = roffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffEscape escapes backslashes and makes every dash a minus sign, as
// options must be typed.
func roffEscape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// roffQuoted is s as one quoted macro argument.
func roffQuoted(s string) string {
	return `"` + strings.ReplaceAll(roffEscape(s), `"`, `\(dq`) + `"`
}
