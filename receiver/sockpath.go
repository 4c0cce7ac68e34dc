package receiver

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxUnixPath is the longest path a unix socket address holds on Linux.
const maxUnixPath = 107

// unixPath returns an address for the socket name inside dir. A data
// directory whose path is too long for a socket address is reached through
// an open descriptor of it (/proc/self/fd/N/name), which the kernel resolves
// like the full path; the closer releases it.
func unixPath(dir, name string) (string, io.Closer, error) {
	full := filepath.Join(dir, name)
	if len(full) <= maxUnixPath {
		return full, io.NopCloser(nil), nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), name), d, nil
}
