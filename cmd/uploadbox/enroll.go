package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/ownership"
	"github.com/uploadbox/uploadbox/uploader"
)

type enrollOptions struct {
	receiver, token, tokenFile, fingerprint string
	stateFlags
}

func newEnrollCommand() *cobra.Command {
	var o enrollOptions
	cmd := &cobra.Command{
		Use:   "enroll --receiver URL (--token-file FILE | --token - | --token T) --ca-fingerprint FP [--state DIR | --config FILE] [--user NAME]",
		Short: "Enroll this box with a receiver: make the device key, get a client certificate",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			token, err := o.readToken(cmd.InOrStdin())
			if err != nil {
				return err
			}
			dir, err := o.dir()
			if err != nil {
				return err
			}
			u, err := o.become(dir)
			if err != nil {
				return fmt.Errorf("enroll: %w", err)
			}
			st, err := uploader.Enroll(cmd.Context(), o.receiver, token, o.fingerprint, dir)
			if err != nil {
				return ownership.Annotate(dir, u, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled with %s as %s\ndevice key: %s\nstate in %s (owner %s, keys 0600)\n",
				st.Receiver, st.DeviceCert.Leaf.Subject.CommonName, st.Device.Public(), st.Dir, u)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.receiver, "receiver", "", "receiver URL, https://HOST:PORT")
	f.StringVar(&o.token, "token", "", "one-time token from uploadbox-receiver devices add, or - to read it from standard input (on the command line it is visible to other users in /proc: prefer - or --token-file)")
	f.StringVar(&o.tokenFile, "token-file", "", "read the one-time token from this file (one line; it must not be readable by group or others)")
	f.StringVar(&o.fingerprint, "ca-fingerprint", "", "the receiver CA's SHA-256 fingerprint from devices add")
	o.add(cmd, "state directory for the device key, certificate and receiver keys")
	for _, n := range []string{"receiver", "ca-fingerprint"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

// readToken takes the token from exactly one of --token, --token - and
// --token-file. A token file is a secret: it follows the private key file
// rule (regular, not group/world-readable).
func (o enrollOptions) readToken(stdin io.Reader) (string, error) {
	switch {
	case o.token != "" && o.tokenFile != "":
		return "", cli.Usagef("give the token once: --token or --token-file, not both")
	case o.tokenFile != "":
		tok, err := crypto.ReadKeyLine(o.tokenFile, true)
		if err != nil {
			return "", fmt.Errorf("enroll: --token-file: %w", err)
		}
		return tok, nil
	case o.token == "-":
		line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
		tok := strings.TrimSpace(line)
		if tok == "" {
			if err == nil || err == io.EOF {
				return "", cli.Usagef("--token -: standard input held no token (pipe the token from devices add)")
			}
			return "", fmt.Errorf("enroll: --token -: %w", err)
		}
		return tok, nil
	case o.token != "":
		return o.token, nil
	}
	return "", cli.Usagef("the enrollment token is required: --token-file FILE, --token - (standard input) or --token T")
}
