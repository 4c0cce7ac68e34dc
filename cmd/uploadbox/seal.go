package main

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/uploader"
)

type sealOptions struct {
	keys        sealingKeyFlags
	out         string
	recordingID string
	sequence    uint64
	prev        string
	codec       string
}

func (o *sealOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	o.keys.AddFlags(cmd)
	f.StringVarP(&o.out, "output", "o", "", "sealed segment to write")
	f.StringVar(&o.recordingID, "recording-id", "", "recording id, 32 hex digits (default: random)")
	f.Uint64Var(&o.sequence, "sequence", 0, "sequence number of the segment in its recording")
	f.StringVar(&o.prev, "prev", "", "commitment of the previous segment, 64 hex digits (required when --sequence > 0)")
	f.StringVar(&o.codec, "codec", "application/octet-stream", "media type recorded in the header")
	cmd.MarkFlagRequired("output")
}

func newSealCommand() *cobra.Command {
	var o sealOptions
	cmd := &cobra.Command{
		Use:   "seal --recipients-file org.pub --device-key dev.key -o OUT IN",
		Short: "Seal a file as a segment: encrypted to the organisation, signed by this box",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := o.params()
			if err != nil {
				return err
			}
			rs, dev, err := o.keys.load()
			if err != nil {
				return err
			}
			defer dev.Destroy()
			h, c, err := crypto.SealFile(args[0], o.out, rs, dev, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sealed %s -> %s (%s, %d recipient(s), recording %x, sequence %d, commitment %x)\n",
				args[0], o.out, h.Suite, len(rs), h.RecordingID, h.Sequence, c)
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func (o *sealOptions) params() (crypto.Params, error) {
	p := crypto.Params{Sequence: o.sequence, Start: time.Now(), Codec: o.codec}
	if o.recordingID == "" {
		id, err := crypto.NewRecordingID()
		if err != nil {
			return p, err
		}
		p.RecordingID = id
	} else if err := decodeHex(o.recordingID, p.RecordingID[:]); err != nil {
		return p, cli.Usagef("--recording-id: %v", err)
	}
	if o.prev != "" {
		if err := decodeHex(o.prev, p.Prev[:]); err != nil {
			return p, cli.Usagef("--prev: %v", err)
		}
	}
	if (p.Sequence == 0) != (o.prev == "") {
		return p, cli.Usagef("--prev is required exactly when --sequence is above 0")
	}
	return p, nil
}

func decodeHex(s string, dst []byte) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return fmt.Errorf("want %d hex digits, got %q", 2*len(dst), s)
	}
	copy(dst, b)
	return nil
}

// sealingKeyFlags choose what a box seals with (seal and record): the
// enrolled state directory, or explicit key files.
type sealingKeyFlags struct {
	recipientsFile, deviceKey, state string
}

func (k *sealingKeyFlags) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&k.recipientsFile, "recipients-file", "", "organisation public keys (1 to 4, one suite)")
	f.StringVar(&k.deviceKey, "device-key", "", "the device's private signing key")
	f.StringVar(&k.state, "state", "", "use the enrolled device key and recipients from this state directory")
}

// load reads the organisation's public keys and the device's signing key.
func (k *sealingKeyFlags) load() ([]*crypto.Recipient, *crypto.DeviceKey, error) {
	state, recipientsFile, deviceKey := k.state, k.recipientsFile, k.deviceKey
	switch {
	case state != "" && (recipientsFile != "" || deviceKey != ""):
		return nil, nil, cli.Usagef("give either --state or --recipients-file and --device-key, not both")
	case state != "":
		recipientsFile = filepath.Join(state, uploader.RecipientsFile)
		deviceKey = filepath.Join(state, uploader.DeviceKeyFile)
	case recipientsFile == "" || deviceKey == "":
		return nil, nil, cli.Usagef("--recipients-file and --device-key are required (or --state DIR after uploadbox enroll)")
	}
	rs, err := crypto.ReadRecipientsFile(recipientsFile)
	if err != nil {
		return nil, nil, err
	}
	dev, err := crypto.ReadDeviceKeyFile(deviceKey)
	if err != nil {
		return nil, nil, err
	}
	return rs, dev, nil
}
