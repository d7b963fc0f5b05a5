package process

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		opts  []string
		flags uintptr
		data  string
	}{
		{nil, 0, ""},
		{[]string{"ro", "bind"}, unix.MS_RDONLY | unix.MS_BIND, ""},
		{[]string{"rbind", "rw", "nosuid"}, unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID, ""},
		{[]string{"index=off", "lowerdir=/a:/b", "upperdir=/u", "workdir=/w"}, 0, "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w"},
		{[]string{"ro", "rw"}, 0, ""},
		{[]string{"nodev", "dev", "size=64k"}, 0, "size=64k"},
	}
	for _, tc := range tests {
		f, d := parseOptions(tc.opts)
		if f != tc.flags || d != tc.data {
			t.Errorf("parseOptions(%q) = %#x %q, want %#x %q", tc.opts, f, d, tc.flags, tc.data)
		}
	}
}
