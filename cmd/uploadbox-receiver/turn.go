package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/turn"
)

// turnServeOptions are serve's flags for the embedded TURN server.
type turnServeOptions struct {
	listen, publicIP, ports string
	ttl                     time.Duration
	max, perCredential      int
}

func (o *turnServeOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.listen, "turn-listen", "", "run the TURN server for live views on this address, UDP and TCP (e.g. :3478; off when empty)")
	f.StringVar(&o.publicIP, "turn-public-ip", "", "IPv4 address of the TURN relays that viewers and boxes reach (default: the --turn-listen IP)")
	f.StringVar(&o.ports, "turn-relay-ports", "", "UDP port range of the relays, MIN-MAX (default: any free port)")
	f.DurationVar(&o.ttl, "turn-ttl", turn.DefaultTTL, "lifetime of the TURN credentials handed out in a WHEP exchange (1m to 24h)")
	f.IntVar(&o.max, "turn-max-allocations", turn.DefaultMaxAllocations, "TURN allocations at once, in total")
	f.IntVar(&o.perCredential, "turn-max-per-credential", turn.DefaultMaxPerCredential, "TURN allocations at once per credential (a viewer's or a box's side of one session; one per transport)")
}

func (o *turnServeOptions) apply(cfg *receiver.ServerConfig) error {
	if o.listen == "" {
		if o.publicIP != "" || o.ports != "" {
			return cli.Usagef("--turn-public-ip and --turn-relay-ports need --turn-listen (TURN is off without it)")
		}
		return nil
	}
	t := turn.Config{Listen: o.listen, TTL: o.ttl, MaxAllocations: o.max, MaxPerCredential: o.perCredential}
	if o.publicIP != "" {
		if t.PublicIP = net.ParseIP(o.publicIP); t.PublicIP == nil {
			return cli.Usagef("--turn-public-ip %q: not an IP address", o.publicIP)
		}
	}
	if o.ports != "" {
		lo, hi, ok := strings.Cut(o.ports, "-")
		min, err1 := strconv.Atoi(lo)
		max, err2 := strconv.Atoi(hi)
		if !ok || err1 != nil || err2 != nil {
			return cli.Usagef("--turn-relay-ports %q: give MIN-MAX, e.g. 49160-49200", o.ports)
		}
		t.MinPort, t.MaxPort = min, max
	}
	if err := t.Check(); err != nil {
		return cli.Usagef("%v", err)
	}
	cfg.TURN = t
	return nil
}

func newTURNCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "turn", Short: "The TURN server embedded in serve"}
	var data string
	var asJSON bool
	status := &cobra.Command{
		Use:   "status --data DIR [--json]",
		Short: "Show the running receiver's TURN server: its URLs, allocations and bytes relayed",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := receiver.TURNStatus(data)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, st)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "listening on %s\nurls:        %s\nallocated:   %d since start, %d refused\nrelayed:     %d bytes to peers, %d from peers\nactive:      %d\n",
				st.Listen, strings.Join(st.URLs, " "), st.Allocated, st.Refused, st.BytesToPeers, st.BytesFromPeers, len(st.Active))
			for _, a := range st.Active {
				who := "viewer " + a.Viewer
				if a.Box {
					who = "box for " + a.Viewer
				}
				fmt.Fprintf(out, "  room %s, %s, %s from %s, relay %s, %d bytes to peers, %d from peers\n", a.Room, who, a.Transport, a.Client, a.Relay, a.BytesToPeers, a.BytesFromPeers)
			}
			return nil
		},
	}
	status.Flags().StringVar(&data, "data", "", "the receiver's data directory")
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	status.MarkFlagRequired("data")
	cmd.AddCommand(status)
	return cmd
}
