package integration

// The CRI test's two images, built from local files only (no registry): a
// sandbox ("pause") image holding a static binary built from
// testdata/cri/pause, and an app image holding the suite's busybox rootfs.
// Each is written as a docker-archive tarball (manifest.json, an image
// config, one uncompressed layer), the format `ctr images import` reads.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

const (
	// criPauseImage and criAppImage live only in the private daemons'
	// metadata; the made-up registry name keeps any pull from succeeding.
	criPauseImage = "leanshim.test/cri-pause:1"
	criAppImage   = "leanshim.test/cri-busybox:1"
)

// criImages are the docker-archive tarballs of the CRI test's images.
type criImages struct {
	pause, app string // paths of the tarballs
}

// buildCRIImages builds both image tarballs in dir. The pause binary is
// built with the go command running this test, static (CGO_ENABLED=0)
// because the image has no libc.
func buildCRIImages(tb testing.TB, dir string) criImages {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the CRI test builds its pause image with the go command: %v", err)
	}
	pauseRoot := filepath.Join(dir, "pause-rootfs")
	if err := os.MkdirAll(pauseRoot, 0o755); err != nil {
		tb.Fatal(err)
	}
	build := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(pauseRoot, "pause"), "./testdata/cri/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build the pause binary: %v\n%s", err, out)
	}
	imgs := criImages{pause: filepath.Join(dir, "pause.tar"), app: filepath.Join(dir, "busybox.tar")}
	if err := writeDockerArchive(imgs.pause, criPauseImage, pauseRoot, imageConfig{Entrypoint: []string{"/pause"}}); err != nil {
		tb.Fatalf("pause image: %v", err)
	}
	appConfig := imageConfig{
		Cmd: []string{"/bin/sh"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	if err := writeDockerArchive(imgs.app, criAppImage, suite.rootfs, appConfig); err != nil {
		tb.Fatalf("busybox image: %v", err)
	}
	return imgs
}

// imageConfig is the "config" object of an OCI/docker image config.
type imageConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

// writeDockerArchive writes, at path, a docker-archive tarball (what `docker
// save` writes) of a one-layer image named ref, whose layer is the tree at
// rootDir.
func writeDockerArchive(path, ref, rootDir string, cfg imageConfig) error {
	var layer bytes.Buffer
	if err := tarTree(&layer, rootDir); err != nil {
		return fmt.Errorf("layer of %s: %w", rootDir, err)
	}
	diffID := sha256.Sum256(layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(diffID[:]) + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": []string{ref},
		"Layers":   []string{layerName},
	}})
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	for _, f := range []struct {
		name string
		data []byte
	}{
		{configName, config},
		{layerName, layer.Bytes()},
		{"manifest.json", manifest},
	} {
		if err := writeTarFile(tw, f.name, f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, archive.Bytes(), 0o644)
}

// writeTarFile adds a regular file (and its parent dir, if any) owned by root.
func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if dir := filepath.Dir(name); dir != "." {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// tarTree writes the tree at root to w as a tar stream with paths relative
// to root, every entry owned by root: dirs, regular files and symlinks (the
// busybox applets), which is all an image layer here needs.
func tarTree(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		return copyInto(tw, path)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func copyInto(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close() // read-only
	_, err = io.Copy(w, f)
	return err
}
