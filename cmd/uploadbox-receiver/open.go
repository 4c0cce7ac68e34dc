package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
)

type openOptions struct {
	identity  string
	out       string
	devicePub string
}

func (o *openOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.identity, "identity", "", "organisation private key file")
	cmd.Flags().StringVarP(&o.out, "output", "o", "", "where to write the plaintext")
	cmd.Flags().StringVar(&o.devicePub, "device-pub", "", "refuse a segment not signed by this device: its public key, or a file holding it")
	cmd.MarkFlagRequired("identity")
	cmd.MarkFlagRequired("output")
}

func newOpenCommand() *cobra.Command {
	var o openOptions
	cmd := &cobra.Command{
		Use:   "open --identity org.key [--device-pub PUB] -o OUT SEG",
		Short: "Decrypt a segment (exit 0 OK, 3 TRUNCATED with the authentic prefix written, 4 corrupt, not for this key or from another device)",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.out == "" || o.identity == "" {
				return cli.Usagef("--identity and -o: give the organisation key file and the file to write the plaintext to")
			}
			dev, err := devicePubFlag(o.devicePub)
			if err != nil {
				return err
			}
			id, err := crypto.ReadIdentityFile(o.identity)
			if err != nil {
				return err
			}
			res, err := crypto.OpenFileFrom(args[0], o.out, dev, id)
			if errors.Is(err, crypto.ErrTruncated) && res != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "TRUNCATED %s: wrote the authentic prefix, %d bytes, to %s\n", args[0], res.Written, o.out)
				return err
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK %s: wrote %d bytes to %s\n", args[0], res.Written, o.out)
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}

type verifyOptions struct {
	devicePub string
}

func newVerifyCommand() *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify --device-pub PUB SEG",
		Short: "Check a segment's device signature and structure without any decryption key",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, err := devicePubFlag(o.devicePub)
			if err != nil {
				return err
			}
			if dev == nil {
				return cli.Usagef("--device-pub: give the device's public key or a file holding it")
			}
			info, err := crypto.VerifyFile(args[0], dev)
			if info != nil && info.Header != nil {
				h := info.Header
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "%s %s\n", crypto.OutcomeOf(err), args[0])
				fmt.Fprintf(out, "device:     %s\n", h.Device)
				fmt.Fprintf(out, "recording:  %x\n", h.RecordingID)
				fmt.Fprintf(out, "sequence:   %d\n", h.Sequence)
				fmt.Fprintf(out, "prev:       %x\n", h.Prev)
				fmt.Fprintf(out, "commitment: %x\n", info.Commitment)
				if info.Trailer != nil {
					fmt.Fprintf(out, "last:       %t\n", info.Trailer.Last())
					if info.Trailer.Last() {
						fmt.Fprintf(out, "ended:      %s\n", info.Trailer.End())
					}
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&o.devicePub, "device-pub", "", "the device public key, or a file holding it")
	cmd.MarkFlagRequired("device-pub")
	return cmd
}

// devicePubFlag reads a --device-pub value: a ubx-dev-pub-ed25519: key or
// a file holding one. Empty means none; a bad value is a usage error.
func devicePubFlag(v string) (*crypto.DevicePublicKey, error) {
	if v == "" {
		return nil, nil
	}
	var dev *crypto.DevicePublicKey
	var err error
	if strings.HasPrefix(v, "ubx-dev-pub-") {
		dev, err = crypto.ParseDevicePublicKey(v)
	} else {
		dev, err = crypto.ReadDevicePublicKeyFile(v)
	}
	if err != nil {
		return nil, cli.Usagef("--device-pub: %v", err)
	}
	return dev, nil
}
