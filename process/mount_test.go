package process

import (
	"slices"
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

func TestCompactLowerdirs(t *testing.T) {
	tests := []struct {
		name    string
		opts    []string
		wantDir string
		wantOpt []string
	}{
		{"no lowerdir", []string{"ro"}, "", []string{"ro"}},
		{"one lowerdir", []string{"lowerdir=/s/1/fs"}, "", []string{"lowerdir=/s/1/fs"}},
		{
			"siblings", []string{"index=off", "lowerdir=/v/snapshots/12/fs:/v/snapshots/1/fs", "upperdir=/v/snapshots/13/fs"},
			"/v/snapshots", []string{"index=off", "lowerdir=12/fs:1/fs", "upperdir=/v/snapshots/13/fs"},
		},
		{"shared digits are not a parent", []string{"lowerdir=/s/10/fs:/s/11/fs"}, "/s", []string{"lowerdir=10/fs:11/fs"}},
		{"common parent is /", []string{"lowerdir=/a/fs:/b/fs"}, "", []string{"lowerdir=/a/fs:/b/fs"}},
		{"relative dir", []string{"lowerdir=/s/1:s/2"}, "", []string{"lowerdir=/s/1:s/2"}},
		{"escaped colon", []string{`lowerdir=/s/a\:b:/s/c`}, "", []string{`lowerdir=/s/a\:b:/s/c`}},
		{"nested", []string{"lowerdir=/s/1:/s/1/x"}, "/s", []string{"lowerdir=1:1/x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := slices.Clone(tc.opts)
			dir, opts := compactLowerdirs(tc.opts)
			if dir != tc.wantDir || !slices.Equal(opts, tc.wantOpt) {
				t.Errorf("compactLowerdirs(%q) = %q %q, want %q %q", tc.opts, dir, opts, tc.wantDir, tc.wantOpt)
			}
			if !slices.Equal(tc.opts, orig) {
				t.Errorf("compactLowerdirs changed its argument to %q", tc.opts)
			}
		})
	}
}
