// Package reproimage rewrites an image that `docker save` wrote so that its
// bytes, and so its ID and the digest a registry gives it, depend only on
// its content: docker's legacy builder stamps the build's clock into the
// config, its history and every file it copies, so two builds of one commit
// would otherwise be two images.
package reproimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// Normalize reads the `docker save` stream r of one image and writes to w a
// `docker load` stream of the same image tagged ref, with every time set to
// epoch and the fields that name the build's containers dropped. It returns
// the new image's ID (its config's digest).
//
// The image is held in memory: the app image is one static binary.
func Normalize(r io.Reader, w io.Writer, epoch time.Time, ref string) (string, error) {
	epoch = epoch.UTC().Truncate(time.Second)
	files, err := readArchive(r)
	if err != nil {
		return "", err
	}
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		return "", fmt.Errorf("docker save's manifest.json: %w", err)
	}
	if len(manifest) != 1 {
		return "", fmt.Errorf("docker save wrote %d images, want 1", len(manifest))
	}
	m := manifest[0]
	rawConfig, ok := files[m.Config]
	if !ok {
		return "", fmt.Errorf("docker save's archive has no config %s", m.Config)
	}

	var layers [][]byte
	var diffIDs []string
	for _, name := range m.Layers {
		in, ok := files[name]
		if !ok {
			return "", fmt.Errorf("docker save's archive has no layer %s", name)
		}
		out, err := normalizeLayer(in, epoch)
		if err != nil {
			return "", fmt.Errorf("layer %s: %w", name, err)
		}
		layers = append(layers, out)
		diffIDs = append(diffIDs, digest(out))
	}
	config, err := normalizeConfig(rawConfig, epoch, diffIDs)
	if err != nil {
		return "", err
	}
	id := digest(config)
	if err := writeArchive(w, epoch, ref, id, config, layers, diffIDs); err != nil {
		return "", err
	}
	return id, nil
}

// readArchive returns the regular files of a docker save archive by name,
// following the symbolic links docker writes for a layer it saved already.
func readArchive(r io.Reader) (map[string][]byte, error) {
	files := map[string][]byte{}
	links := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read docker save's archive: %w", err)
		}
		name := path.Clean(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("read %s from docker save's archive: %w", name, err)
			}
			files[name] = b
		case tar.TypeSymlink:
			links[name] = path.Join(path.Dir(name), hdr.Linkname)
		}
	}
	for name, target := range links {
		if b, ok := files[target]; ok {
			files[name] = b
		}
	}
	return files, nil
}

// normalizeLayer rewrites a layer's tar with every file time at epoch and
// only the header fields that describe the file, in the same order.
func normalizeLayer(in []byte, epoch time.Time) ([]byte, error) {
	var out bytes.Buffer
	tr := tar.NewReader(bytes.NewReader(in))
	tw := tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		h := &tar.Header{
			Typeflag: hdr.Typeflag,
			Name:     hdr.Name,
			Linkname: hdr.Linkname,
			Size:     hdr.Size,
			Mode:     hdr.Mode,
			Uid:      hdr.Uid,
			Gid:      hdr.Gid,
			Uname:    hdr.Uname,
			Gname:    hdr.Gname,
			ModTime:  epoch,
			Devmajor: hdr.Devmajor,
			Devminor: hdr.Devminor,
		}
		// Extended attributes (file capabilities) are content; the PAX
		// times docker may add are not.
		for k, v := range hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if h.PAXRecords == nil {
					h.PAXRecords = map[string]string{}
				}
				h.PAXRecords[k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// normalizeConfig sets the config's times to epoch, drops the fields that
// name the build's containers and intermediate images, and lists the
// rewritten layers. Labels, entrypoint, env, user and ports stay as built.
func normalizeConfig(raw []byte, epoch time.Time, diffIDs []string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	created := epoch.Format(time.RFC3339)
	// These describe the build rather than the image: the container each
	// step ran in, and the engine's version.
	for _, k := range []string{"container", "container_config", "docker_version"} {
		delete(c, k)
	}
	c["created"] = created
	if cfg, ok := c["config"].(map[string]any); ok {
		// Image is the ID of the step before the last, which has a
		// build time in it; Hostname is the step's container.
		for _, k := range []string{"Image", "Hostname"} {
			if _, ok := cfg[k]; ok {
				cfg[k] = ""
			}
		}
	}
	if history, ok := c["history"].([]any); ok {
		for _, h := range history {
			if h, ok := h.(map[string]any); ok {
				h["created"] = created
			}
		}
	}
	rootfs, ok := c["rootfs"].(map[string]any)
	if !ok {
		return nil, errors.New("image config has no rootfs")
	}
	if old, _ := rootfs["diff_ids"].([]any); len(old) != len(diffIDs) {
		return nil, fmt.Errorf("image config lists %d layers, docker saved %d", len(old), len(diffIDs))
	}
	rootfs["diff_ids"] = diffIDs
	// Marshal writes map keys sorted, so equal configs are equal bytes.
	return json.Marshal(c)
}

// writeArchive writes a docker load archive of one image.
func writeArchive(w io.Writer, epoch time.Time, ref, id string, config []byte, layers [][]byte, diffIDs []string) error {
	tw := tar.NewWriter(w)
	file := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	configName := strings.TrimPrefix(id, "sha256:") + ".json"
	if err := file(configName, config); err != nil {
		return err
	}
	var names []string
	written := map[string]bool{}
	for i, l := range layers {
		name := strings.TrimPrefix(diffIDs[i], "sha256:") + "/layer.tar"
		names = append(names, name)
		if written[name] {
			continue
		}
		written[name] = true
		if err := file(name, l); err != nil {
			return err
		}
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{ref}, "Layers": names}})
	if err != nil {
		return err
	}
	if err := file("manifest.json", manifest); err != nil {
		return err
	}
	return tw.Close()
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
