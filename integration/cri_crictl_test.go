package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// ok reports whether the command exited 0.
func (r cmdResult) ok() bool { return r.code == 0 && r.err == nil }

// crictl runs crictl against the daemon with crictlTimeout. It never fails
// a test itself; callers assert on the result.
func (d *criDaemon) crictl(args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), crictlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.crictlBin, append([]string{"--config", d.crictlConfig}, args...)...)
	return runTool(ctx, cmd, "crictl", args)
}

// mustCrictl runs crictl and fails tb unless it exits 0; it returns stdout
// without surrounding space.
func (d *criDaemon) mustCrictl(tb testing.TB, args ...string) string {
	tb.Helper()
	r := d.crictl(args...)
	if !r.ok() {
		tb.Fatalf("%v", r)
	}
	return strings.TrimSpace(r.stdout)
}

// crictlJSON runs crictl (an inspect command) and decodes its JSON output.
func (d *criDaemon) crictlJSON(v any, args ...string) error {
	r := d.crictl(args...)
	if !r.ok() {
		return errors.New(r.String())
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		return fmt.Errorf("crictl %s: %w in %q", strings.Join(args, " "), err, r.stdout)
	}
	return nil
}
