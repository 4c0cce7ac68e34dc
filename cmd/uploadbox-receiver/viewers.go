package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/viewers"
)

func newViewersCommand() *cobra.Command {
	vs := &cobra.Command{Use: "viewers", Short: "Manage viewer accounts: add, list, unlock, change passwords, disable, enable, remove"}
	var addStdin, passwdStdin bool
	var addRole string
	add := adminCommand("add NAME [--role viewer|teacher|admin] [--password-stdin] [--json]", "Add an account (a viewer unless --role says otherwise); without --password-stdin, prompt on a terminal or generate a password", cobra.ExactArgs(1),
		func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
			role, err := viewers.ParseRole(addRole)
			if err != nil {
				return cli.Usagef("--role: %v", err)
			}
			pw, generated, err := newPassword(cmd, addStdin)
			if err != nil {
				return err
			}
			if err := a.AddViewer(args[0], pw); err != nil {
				return err
			}
			if role != viewers.RoleViewer {
				if err := a.SetViewerRole(args[0], role); err != nil {
					return fmt.Errorf("viewer %s added, but its role was not set (run: uploadbox-receiver viewers role %s %s): %w", args[0], args[0], role, err)
				}
			}
			return printPassword(cmd, "added", args[0], pw, generated, asJSON)
		})
	add.Flags().BoolVar(&addStdin, "password-stdin", false, "read the password from the first line of stdin")
	add.Flags().StringVar(&addRole, "role", viewers.RoleViewer, "the account's role: viewer (a coach), teacher (answers for its rooms) or admin")
	passwd := adminCommand("passwd NAME [--password-stdin] [--json]", "Set a viewer's password (it does not unlock the account)", cobra.ExactArgs(1),
		func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
			pw, generated, err := newPassword(cmd, passwdStdin)
			if err != nil {
				return err
			}
			if err := a.SetViewerPassword(args[0], pw); err != nil {
				return err
			}
			return printPassword(cmd, "password changed", args[0], pw, generated, asJSON)
		})
	passwd.Flags().BoolVar(&passwdStdin, "password-stdin", false, "read the password from the first line of stdin")
	vs.AddCommand(add, passwd,
		adminCommand("list [--json]", "List viewers: created, locked, recent failures, last login", cobra.NoArgs,
			func(cmd *cobra.Command, a receiver.Admin, _ []string, asJSON bool) error {
				list, err := a.ListViewers()
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, list)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tLOCKED\tDISABLED\tFAILURES\tLAST LOGIN\tROOMS")
				for _, v := range list {
					last := "-"
					if !v.LastLogin.IsZero() {
						last = v.LastLogin.Format("2006-01-02 15:04")
					}
					rooms := "-"
					if len(v.Rooms) > 0 {
						rooms = strings.Join(v.Rooms, ",")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%t\t%d\t%s\t%s\n", v.Name, v.Role, v.Created.Format("2006-01-02 15:04"), v.Locked, v.Disabled, v.Failures, last, rooms)
				}
				return tw.Flush()
			}),
		adminCommand("allow NAME DEVICE", "Let a viewer ask for DEVICE's live view through the receiver (rooms are denied unless allowed; the box still asks for consent)", cobra.ExactArgs(2),
			func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
				if err := a.AllowRoom(args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "viewer %s allowed room %s\n", args[0], args[1])
				return nil
			}),
		adminCommand("deny-room NAME DEVICE", "Withdraw a viewer's room (allow NAME DEVICE)", cobra.ExactArgs(2),
			func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
				if err := a.DenyRoom(args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "viewer %s denied room %s\n", args[0], args[1])
				return nil
			}),
		adminCommand("role NAME ROLE", "Set an account's role: viewer (a coach), teacher (sees and decides for the rooms it is allowed) or admin", cobra.ExactArgs(2),
			func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
				role, err := viewers.ParseRole(args[1])
				if err != nil {
					return cli.Usagef("viewers role: %v", err)
				}
				if err := a.SetViewerRole(args[0], role); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "viewer %s is now a %s\n", args[0], role)
				return nil
			}),
		adminCommand("unlock NAME", "Unlock a viewer locked after repeated failed logins", cobra.ExactArgs(1),
			func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
				if err := a.UnlockViewer(args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "viewer %s unlocked\n", args[0])
				return nil
			}),
	)
	vs.AddCommand(newViewerStateCommands()...)
	return vs
}

// printPassword reports the change; a generated password is printed here,
// once, because nobody else knows it.
func printPassword(cmd *cobra.Command, what, name, pw string, generated, asJSON bool) error {
	if asJSON {
		out := map[string]string{"name": name}
		if generated {
			out["password"] = pw
		}
		return printJSON(cmd, out)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "viewer %s %s\n", name, what)
	if generated {
		fmt.Fprintf(cmd.OutOrStdout(), "generated password (shown once): %s\n", pw)
	}
	return nil
}

// newPassword reads a password from stdin (fromStdin), prompts twice on a
// terminal, or else generates one.
func newPassword(cmd *cobra.Command, fromStdin bool) (pw string, generated bool, err error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(in, viewers.MaxPasswordLength*4+2)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read the password from stdin: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", false, errors.New("--password-stdin: stdin held no password (give it one line)")
		}
		return pw, false, nil
	}
	if f, ok := in.(*os.File); ok && isTTY(f) {
		first, err := promptHidden(f, cmd.ErrOrStderr(), "New password: ")
		if err != nil {
			return "", false, err
		}
		second, err := promptHidden(f, cmd.ErrOrStderr(), "Repeat it: ")
		if err != nil {
			return "", false, err
		}
		if first != second {
			return "", false, errors.New("the two passwords differ: nothing changed")
		}
		return first, false, nil
	}
	pw, err = viewers.GeneratePassword()
	return pw, true, err
}

// isTTY reports whether f is a terminal (not merely a character device
// such as /dev/null), so a password can be prompted for.
func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// promptHidden reads one line from the terminal f with echo turned off.
func promptHidden(f *os.File, prompt io.Writer, text string) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(prompt, text)
	defer fmt.Fprintln(prompt)
	var line []byte
	var b [1]byte
	for {
		n, err := f.Read(b[:])
		if n == 1 && b[0] != '\n' && b[0] != '\r' {
			if len(line) >= viewers.MaxPasswordLength*4 {
				return "", errors.New("the password is too long")
			}
			line = append(line, b[0])
			continue
		}
		if n == 1 || errors.Is(err, io.EOF) {
			return string(line), nil
		}
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
	}
}

// viewerServeOptions are serve's flags for viewer accounts.
type viewerServeOptions struct {
	policy string
	ttl    time.Duration
}

func (o *viewerServeOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.policy, "password-policy", "medium", "viewer password policy: medium (12+ characters, 2 classes) or high (16+, 3 classes)")
	f.DurationVar(&o.ttl, "viewer-token-ttl", viewers.DefaultTokenTTL, "lifetime of the viewer token issued at login (at most 12h)")
}

func (o *viewerServeOptions) apply(cfg *receiver.ServerConfig) error {
	p, err := viewers.ParsePolicy(o.policy)
	if err != nil {
		return cli.Usagef("--password-policy: %v", err)
	}
	if o.ttl <= 0 || o.ttl > viewtoken.MaxTTL {
		return cli.Usagef("--viewer-token-ttl %s: %v", o.ttl, viewtoken.ErrBadTTL)
	}
	cfg.PasswordPolicy, cfg.ViewerTokenTTL = p, o.ttl
	return nil
}
