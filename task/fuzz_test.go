package task

import (
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runtimeoptions"
)

// FuzzDecodeOptions feeds arbitrary type URLs and bytes to decodeOptions:
// it must never panic, and a refusal must be InvalidArgument or
// Unimplemented, never Unknown or Internal.
func FuzzDecodeOptions(f *testing.F) {
	runc, _ := proto.Marshal(&runcopts.Options{BinaryName: "crun", Root: "/run/x", SystemdCgroup: true})
	body, _ := proto.Marshal(&runtimeoptions.Options{TypeUrl: "containerd.runc.v1.Options",
		ConfigBody: []byte("BinaryName = \"crun\"\nSystemdCgroup = true\n")})
	badBody, _ := proto.Marshal(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = [")})
	missing, _ := proto.Marshal(&runtimeoptions.Options{ConfigPath: "/nonexistent/runtime.toml"})
	for _, url := range []string{"containerd.runc.v1.Options", "type.googleapis.com/containerd.runc.v1.Options"} {
		f.Add(url, runc)
		f.Add(url, []byte{0x0a})                   // truncated length-delimited field
		f.Add(url, []byte{0xff, 0xff, 0xff, 0xff}) // bad varint tag
	}
	for _, url := range []string{"runtimeoptions.v1.Options", "type.googleapis.com/runtimeoptions.v1.Options"} {
		f.Add(url, body)
		f.Add(url, badBody)
		f.Add(url, missing)
		f.Add(url, []byte{0x1a, 0x05, 'a'}) // config_body longer than the input
	}
	f.Add("", []byte(nil))
	f.Add("", []byte{1})
	f.Add("example.com/Nope", []byte{1})
	f.Add("type.googleapis.com/", []byte(nil))
	f.Fuzz(func(t *testing.T, url string, value []byte) {
		o, err := decodeOptions(&gogotypes.Any{TypeUrl: url, Value: value})
		if err != nil {
			if c := code(err); c != codes.InvalidArgument && c != codes.Unimplemented {
				t.Fatalf("decodeOptions(%q, %x): error class %s, want InvalidArgument or Unimplemented: %v", url, value, c, err)
			}
			if o != nil {
				t.Fatalf("decodeOptions(%q, %x): options %+v returned with error %v", url, value, o, err)
			}
			return
		}
		if o == nil {
			t.Fatalf("decodeOptions(%q, %x): nil options and nil error", url, value)
		}
	})
}

// FuzzValidID checks validID never panics and never accepts an id that
// could escape or break a path: '/', "..", NUL, or more than 76 bytes.
func FuzzValidID(f *testing.F) {
	for _, id := range []string{"c1", "a.b_c-d", "..", "../x", "a/b", "a\x00b", "-a", "a-", "a..b",
		strings.Repeat("a", 76), strings.Repeat("a", 77), "é", " ", ""} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := validID("container id", id)
		if err != nil {
			if c := code(err); c != codes.InvalidArgument {
				t.Fatalf("validID(%q): error class %s, want InvalidArgument", id, c)
			}
			return
		}
		if id == "" || len(id) > 76 || strings.ContainsAny(id, "/\x00") || strings.Contains(id, "..") ||
			id == "." || strings.HasPrefix(id, ".") || strings.HasPrefix(id, "-") {
			t.Fatalf("validID accepted %q", id)
		}
	})
}
