package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestStepsInREADME: README's "Benchmarks" lists for -only the steps the
// bench has, in its order.
func TestStepsInREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("-only NAME'`\\) runs one\\s*\\(([^)]*)\\)").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README: no \"-only NAME … runs one (…)\" list")
	}
	got := strings.Join(strings.Fields(string(m[1])), " ")
	if want := strings.Join(stepNames, ", "); got != want {
		t.Errorf("README lists -only steps %q, want %q", got, want)
	}
}

func TestOnlyUnknownStep(t *testing.T) {
	err := run("bin", 0, 0, 0, nil, 0, 0, 0, "", 0, capacityOptions{}, "talk")
	if err == nil || !strings.Contains(err.Error(), `-only "talk": want one of seal, `) {
		t.Errorf("run -only talk: %v, want an error listing the steps", err)
	}
}
