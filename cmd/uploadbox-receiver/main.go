// Command uploadbox-receiver is the cloud side: it receives, verifies and
// stores sealed segments, and opens them for whoever holds the
// organisation's private key.
package main

import "github.com/uploadbox/uploadbox/internal/cli"

func main() { cli.Main(newRootCommand()) }
