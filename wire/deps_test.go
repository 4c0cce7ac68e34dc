package wire

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/uploadbox/uploadbox"

// TestDependencyRule holds the rule this package exists for: the box's
// binary links nothing of the receiver (tusd, the S3 client, the
// receiver's own packages), and wire imports neither side. bbolt is
// allowed on the box: its consent ledger and spool use it.
func TestDependencyRule(t *testing.T) {
	receiverSide := []string{
		"github.com/tus/tusd",
		"github.com/aws/aws-sdk-go-v2",
		"github.com/aws/smithy-go",
		module + "/receiver",
		module + "/cmd/uploadbox-receiver",
	}
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{module + "/cmd/uploadbox", receiverSide},
		{module + "/wire", append(receiverSide, module+"/uploader", module+"/agent", module+"/capture", module+"/consent", module+"/cmd/uploadbox")},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.pkg, module+"/"), func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", tt.pkg).Output()
			if err != nil {
				stderr := ""
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("go list -deps %s: %v\n%s", tt.pkg, err, stderr)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 2 {
				t.Fatalf("go list -deps %s listed %d packages: %q", tt.pkg, len(deps), out)
			}
			for _, d := range deps {
				for _, f := range tt.forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s depends on %s (%s is the receiver's side: share through package wire)", tt.pkg, d, f)
					}
				}
			}
		})
	}
}
