// Command uploadbox is the device side: the daemon and the commands that
// technicians and test rigs run on a box.
package main

import "github.com/uploadbox/uploadbox/internal/cli"

func main() { cli.Main(newRootCommand()) }
