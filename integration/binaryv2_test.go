package integration

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogURIBinaryV2 runs binary-v2:// loggers (containerd 2.2+) on
// containerd 2.4.2: testlogger, which writes its ready byte, gets every
// byte; a logger that only closes its ready pipe fails the create with an
// error saying so; and neither that nor a URI of an unknown scheme comes
// back Unimplemented, which containerd 2.4 would take for an old task API
// (it logs "downgrading client API version" and retries).
func TestLogURIBinaryV2(t *testing.T) {
	t.Parallel()
	d := startContainerd(t, withFlavor(containerd24Flavor(t)))
	logger := buildTestLogger(t)
	t.Run("logger writes ready", func(t *testing.T) {
		dir := t.TempDir()
		runBinaryLogged(t, d, logger, dir, "binary-v2://"+logger+"?dir="+url.QueryEscape(dir))
		if got, want := mustRead(t, filepath.Join(dir, "args")), "dir\n"+dir+"\n"; got != want {
			t.Errorf("logger's arguments: want %q; got %q", want, got)
		}
	})

	silent := filepath.Join(t.TempDir(), "silent-logger")
	// Closes fd 5 without a byte, then reads the container's stdout.
	script := "#!/bin/sh\nexec 5>&-\nexec /bin/cat <&3 >/dev/null\n"
	if err := os.WriteFile(silent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, uri, want string
	}{
		{"logger never writes ready", "binary-v2://" + silent, "ready"},
		{"unknown scheme", "nope:///x", "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := fileSize(t, d.logPath)
			id := d.newID("logv2")
			r := d.run(t, []string{"-d", "--log-uri", tc.uri}, id, "/bin/true")
			t.Logf("refused as: %s", strings.TrimSpace(r.stderr))
			if r.code == 0 || r.err != nil || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("run -d --log-uri %s: want a failure mentioning %q; got %v", tc.uri, tc.want, r)
			}
			if log := readTail(d.logPath, offset); strings.Contains(log, "downgrading client API version") {
				t.Errorf("containerd took the refusal for an old task API (Unimplemented):\n%s", log)
			}
			d.mustCtr(t, "container", "rm", id)
			assertNoLeftovers(t, d, id)
		})
	}
}
