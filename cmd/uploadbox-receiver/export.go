package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

type exportOptions struct {
	identity  string
	out       string
	devicePub string
}

func newExportCommand() *cobra.Command {
	var o exportOptions
	cmd := &cobra.Command{
		Use:   "export --identity org.key [--device-pub PUB] -o rec.mp4 SEG...",
		Short: "Check a recording's chain, decrypt its segments and write one playable MP4",
		Args:  cli.Args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.out == "" || o.identity == "" {
				return cli.Usagef("--identity and -o: give the organisation key file and the MP4 file to write")
			}
			dev, err := devicePubFlag(o.devicePub)
			if err != nil {
				return err
			}
			id, err := crypto.ReadIdentityFile(o.identity)
			if err != nil {
				return err
			}
			opts := receiver.ExportOptions{Device: dev}
			if isTerminal(os.Stderr) {
				opts.Progress = progressBar(cmd.ErrOrStderr())
			}
			rep, err := receiver.Export(cmd.Context(), o.out, []*crypto.Identity{id}, args, opts)
			if opts.Progress != nil {
				fmt.Fprintln(cmd.ErrOrStderr())
			}
			if rep != nil {
				printWarnings(cmd.ErrOrStderr(), rep)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, s := range rep.Segments {
				fmt.Fprintf(out, "%-9s sequence %d  %s (%d fragments)\n", s.Outcome, s.Sequence, s.Path, s.Fragments)
			}
			fmt.Fprintf(out, "exported %d segments of recording %x to %s: %s, %d bytes\n",
				len(rep.Segments), rep.RecordingID, rep.Output, rep.Duration, rep.Bytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.identity, "identity", "", "organisation private key file")
	cmd.Flags().StringVarP(&o.out, "output", "o", "", "MP4 file to write")
	cmd.Flags().StringVar(&o.devicePub, "device-pub", "", "refuse segments not signed by this device: its public key, or a file holding it")
	cmd.MarkFlagRequired("identity")
	cmd.MarkFlagRequired("output")
	return cmd
}

func printWarnings(w io.Writer, rep *receiver.ExportReport) {
	for _, s := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	for _, s := range rep.Segments {
		for _, m := range s.Warnings {
			fmt.Fprintf(w, "warning: %s: %s\n", s.Path, m)
		}
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressBar draws a one-line bar, redrawn in place.
func progressBar(w io.Writer) func(done, total int64) {
	const width = 40
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		n := int(done * width / total)
		fmt.Fprintf(w, "\r[%s%s] %3d%%", strings.Repeat("#", n), strings.Repeat(" ", width-n), done*100/total)
	}
}
