package integration

// An image of 128 layers, as containerd's overlayfs snapshotter mounts it:
// one overlay whose lowerdir= lists 128 snapshot dirs, about 9 KiB of
// options under these daemons' roots, more than mount(2)'s one page.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// manyLayers is the layer count of TestImageOfManyLayers' image.
const manyLayers = 128

// TestImageOfManyLayers imports an image of 128 layers (the busybox rootfs,
// then 127 layers of one file each) and runs it on every containerd: the
// container must see a file of every layer, and nothing may be left
// mounted.
func TestImageOfManyLayers(t *testing.T) {
	t.Parallel()
	archive := filepath.Join(t.TempDir(), "layers.tar")
	const ref = "leanshim.test/layers:128"
	if err := writeLayeredArchive(archive, ref, suite.rootfs, manyLayers-1); err != nil {
		t.Fatal(err)
	}
	for _, fl := range flavors(t) {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			d := startContainerd(t, withFlavor(fl))
			d.mustCtr(t, "images", "import", archive)
			id := d.newID("layers")
			start := time.Now()
			r := d.ctr(t, "run", "--rm", "--runtime", d.flavor.runtime, "--fifo-dir", d.fifoDir, ref, id,
				"/bin/sh", "-c", "ls /layers | wc -l; cat /layers/001 /layers/127")
			t.Logf("%s: ctr run --rm of the %d-layer image with %s: %v", d.flavor.name, manyLayers, d.flavor.runtime, time.Since(start).Round(time.Millisecond))
			want := fmt.Sprintf("%d\nlayer 1\nlayer 127\n", manyLayers-1)
			if r.code != 0 || r.stdout != want {
				t.Fatalf("want exit 0 and stdout %q; got %v", want, r)
			}
			assertNoLeftovers(t, d, id)
		})
	}
}

// writeLayeredArchive writes, at path, a docker-archive tarball of an image
// named ref whose first layer is the tree at rootDir, followed by extra
// layers that each add the file /layers/NNN.
func writeLayeredArchive(path, ref, rootDir string, extra int) error {
	var base bytes.Buffer
	if err := tarTree(&base, rootDir); err != nil {
		return fmt.Errorf("layer of %s: %w", rootDir, err)
	}
	layers := [][]byte{base.Bytes()}
	for i := 1; i <= extra; i++ {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		if err := writeTarFile(tw, fmt.Sprintf("layers/%03d", i), fmt.Appendf(nil, "layer %d\n", i)); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		layers = append(layers, b.Bytes())
	}
	var diffIDs, names []string
	files := map[string][]byte{}
	for _, l := range layers {
		sum := sha256.Sum256(l)
		h := hex.EncodeToString(sum[:])
		diffIDs = append(diffIDs, "sha256:"+h)
		names = append(names, h+"/layer.tar")
		files[h+"/layer.tar"] = l
	}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       imageConfig{Env: []string{"PATH=/bin"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{ref}, "Layers": names}})
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	entries := append([]string{configName, "manifest.json"}, names...)
	files[configName], files["manifest.json"] = config, manifest
	for _, name := range entries {
		if strings.HasSuffix(name, "/layer.tar") {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: filepath.Dir(name) + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(files[name]))}); err != nil {
			return err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
