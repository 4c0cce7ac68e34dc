package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/pki"
)

// keyServeOptions are serve's flags for device certificates.
type keyServeOptions struct {
	deviceCertTTL time.Duration
}

func (o *keyServeOptions) addFlags(f *pflag.FlagSet) {
	f.DurationVar(&o.deviceCertTTL, "device-cert-ttl", pki.DeviceLifetime, "lifetime of the device certificates issued at enrollment and renewal (10s to 87600h); boxes renew theirs at two thirds of it")
}

func (o *keyServeOptions) apply(cfg *receiver.ServerConfig) error {
	cfg.DeviceCertTTL = o.deviceCertTTL
	return nil
}
