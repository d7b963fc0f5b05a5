package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDeleteResponse checks what the delete action reports (PROTOCOL.md
// §1.11): the init's recorded exit when the shim wrote one (as containerd
// 2.x's runc shim does), else SIGKILL now with runc's pid.
func TestDeleteResponse(t *testing.T) {
	killedAt := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name        string
		files       map[string]string
		wantPid     uint32
		wantStatus  uint32
		wantAt      time.Time
		wantWarning string
	}{
		{name: "nothing recorded", wantStatus: 137, wantAt: killedAt},
		{name: "init.pid only", files: map[string]string{"init.pid": "1234"}, wantPid: 1234, wantStatus: 137, wantAt: killedAt},
		{
			name:    "recorded exit",
			files:   map[string]string{"init.pid": "1234", "exit.json": `{"timestamp":"2026-01-02T03:04:05Z","pid":1234,"status":3}`},
			wantPid: 1234, wantStatus: 3, wantAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		},
		{
			name:    "broken record",
			files:   map[string]string{"init.pid": "1234", "exit.json": `{`},
			wantPid: 1234, wantStatus: 137, wantAt: killedAt, wantWarning: "exit.json",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var warnings []string
			resp := deleteResponse(dir, killedAt, func(f string, a ...any) { warnings = append(warnings, fmt.Sprintf(f, a...)) })
			at := time.Unix(resp.ExitedAt.Seconds, int64(resp.ExitedAt.Nanos)).UTC()
			if resp.Pid != tc.wantPid || resp.ExitStatus != tc.wantStatus || !at.Equal(tc.wantAt) {
				t.Errorf("got pid %d status %d at %s; want %d %d %s", resp.Pid, resp.ExitStatus, at, tc.wantPid, tc.wantStatus, tc.wantAt)
			}
			if tc.wantWarning == "" && len(warnings) > 0 || tc.wantWarning != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], tc.wantWarning)) {
				t.Errorf("warnings %v, want %q", warnings, tc.wantWarning)
			}
		})
	}
}
