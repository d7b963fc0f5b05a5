package pod

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// sandboxIDAnnotation is the annotation the CRI plugin puts on every
// container of a pod: the pod's sandbox id.
const sandboxIDAnnotation = "io.kubernetes.cri.sandbox-id"

// specMount is an OCI runtime-spec mount.
type specMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// podSpec is the part of an OCI spec PatchSpec reads; everything else is
// kept as it is.
type podSpec struct {
	Root *struct {
		Readonly bool `json:"readonly,omitempty"`
	} `json:"root,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Mounts      []specMount       `json:"mounts,omitempty"`
	Linux       *struct {
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path,omitempty"`
		} `json:"namespaces,omitempty"`
	} `json:"linux,omitempty"`
}

// patchMounts returns the mounts of a container of pod p (holder pid pid,
// files in dir) with the pod's files added where the spec has none:
// /etc/hostname, /etc/hosts, /etc/resolv.conf (read-only with a read-only
// rootfs, as the CRI plugin mounts them), and, when the container shares
// the pod's IPC namespace, the pod's /dev/shm in place of the container's
// own tmpfs. ok is false when nothing changes.
func patchMounts(s podSpec, dir string, pid int, hostIPC bool) ([]specMount, bool) {
	ro := s.Root != nil && s.Root.Readonly
	has := make(map[string]int, len(s.Mounts))
	for i, m := range s.Mounts {
		has[filepath.Clean(m.Destination)] = i
	}
	mounts := append([]specMount(nil), s.Mounts...)
	changed := false
	for _, f := range []struct{ dst, name string }{
		{"/etc/hostname", hostnameFile}, {"/etc/hosts", hostsFile}, {"/etc/resolv.conf", resolvFile},
	} {
		if _, ok := has[f.dst]; ok {
			continue
		}
		opts := []string{"rbind", "rprivate", "rw"}
		if ro {
			opts[2] = "ro"
		}
		mounts = append(mounts, specMount{Destination: f.dst, Type: "bind", Source: filepath.Join(dir, f.name), Options: opts})
		changed = true
	}
	if hostIPC || !joinsIPC(s, pid) {
		return mounts, changed
	}
	shm := specMount{Destination: "/dev/shm", Type: "bind", Source: filepath.Join(dir, shmDir),
		Options: []string{"rbind", "rprivate", "rw"}}
	i, ok := has["/dev/shm"]
	switch {
	case !ok:
		mounts = append(mounts, shm)
	case mounts[i].Type == "tmpfs": // the runtime's default, the container's own
		mounts[i] = shm
	default:
		return mounts, changed // the container asked for its own
	}
	return mounts, true
}

// joinsIPC tells whether the spec joins the holder's IPC namespace.
func joinsIPC(s podSpec, pid int) bool {
	if s.Linux == nil {
		return false
	}
	want := fmt.Sprintf("/proc/%d/ns/ipc", pid)
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == "ipc" && ns.Path == want {
			return true
		}
	}
	return false
}

// rewriteMounts replaces the "mounts" of the spec file at path, keeping
// every other field byte for byte, through a temporary file and a rename.
func rewriteMounts(path string, raw map[string]json.RawMessage, mounts []specMount) error {
	b, err := json.Marshal(mounts)
	if err != nil {
		return err
	}
	raw["mounts"] = b
	out, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	tmp := path + ".leanshim-tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
