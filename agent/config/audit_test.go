package config

import (
	"strings"
	"testing"
	"time"
)

func TestAuditCheckpointEvery(t *testing.T) {
	if d := Default().Audit.CheckpointEvery.D(); d != 10*time.Minute {
		t.Fatalf("default audit.checkpoint_every %s, want 10m", d)
	}
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"1s", true}, {"10m", true}, {"0s", false}, {"11m", false}, {"1h", false}} {
		c, err := Parse([]byte("audit:\n  checkpoint_every: "+tc.value+"\n"), []string{})
		if tc.ok && (err != nil || c.Audit.CheckpointEvery.String() == "") {
			t.Errorf("%s: %v", tc.value, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "audit.checkpoint_every (line 2): ") || !strings.Contains(err.Error(), "use 1s to 10m")) {
			t.Errorf("%s: err = %v", tc.value, err)
		}
	}
}
