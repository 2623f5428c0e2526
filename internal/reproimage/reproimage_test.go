package reproimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// build describes one docker build of a one-file image.
type build struct {
	at        time.Time // the build's clock
	container string
	label     string
	content   string
}

// saved returns a `docker save` archive of the build, as docker 20.10's
// legacy builder writes it.
func (b build) saved(tb testing.TB) []byte {
	tb.Helper()
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	if err := lw.WriteHeader(&tar.Header{
		Name: "app", Mode: 0o755, Size: int64(len(b.content)), ModTime: b.at,
		AccessTime: b.at, ChangeTime: b.at, Format: tar.FormatPAX,
	}); err != nil {
		tb.Fatal(err)
	}
	if _, err := lw.Write([]byte(b.content)); err != nil {
		tb.Fatal(err)
	}
	if err := lw.Close(); err != nil {
		tb.Fatal(err)
	}
	created := b.at.Format(time.RFC3339Nano)
	config := map[string]any{
		"architecture": "amd64", "os": "linux", "created": created,
		"container": b.container, "docker_version": "20.10.24+dfsg1",
		"container_config": map[string]any{"Hostname": "vm", "Image": "sha256:" + b.container},
		"config": map[string]any{
			"Hostname": "", "User": "65532:65532", "Env": []string{"LISTEN_ADDR=:8080"},
			"Entrypoint": []string{"/app"}, "ExposedPorts": map[string]any{"8080/tcp": map[string]any{}},
			"Image": "sha256:" + b.container, "Labels": map[string]string{"org.opencontainers.image.revision": b.label},
		},
		"history": []map[string]any{
			{"created": created, "created_by": "/bin/sh -c #(nop) COPY file:abc in /app "},
			{"created": created, "created_by": "/bin/sh -c #(nop)  USER 65532:65532", "empty_layer": true},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:what-docker-said", "sha256:what-docker-said"}},
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		tb.Fatal(err)
	}
	manifest := `[{"Config":"c0ffee.json","RepoTags":["counter:x"],"Layers":["l1/layer.tar","l2/layer.tar"]}]`
	var out bytes.Buffer
	w := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		body []byte
	}{{"c0ffee.json", cfg}, {"l1/layer.tar", layer.Bytes()}, {"manifest.json", []byte(manifest)}} {
		if err := w.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: b.at}); err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write(f.body); err != nil {
			tb.Fatal(err)
		}
	}
	// docker save links a layer it wrote already instead of writing it twice.
	if err := w.WriteHeader(&tar.Header{Name: "l2/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../l1/layer.tar"}); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func normalize(tb testing.TB, saved []byte, epoch time.Time) (id string, out []byte) {
	tb.Helper()
	var buf bytes.Buffer
	id, err := Normalize(bytes.NewReader(saved), &buf, epoch, "127.0.0.1:5000/counter:abc")
	if err != nil {
		tb.Fatal(err)
	}
	return id, buf.Bytes()
}

func TestNormalize(t *testing.T) {
	commit := time.Unix(1764051309, 0)
	base := build{at: time.Date(2026, 11, 25, 4, 40, 27, 387495486, time.UTC), container: "466182c8", label: "2b6d50e8d52b", content: "binary"}
	later := func(b build) build {
		b.at, b.container = b.at.Add(3*time.Hour+17*time.Millisecond), "9bcfa30f"
		return b
	}
	tests := []struct {
		name     string
		a, b     build
		epochA   time.Time
		epochB   time.Time
		sameID   bool
		sameFile bool
	}{
		{"one image/when the same content is built at two times in two containers", base, later(base), commit, commit, true, true},
		{"two images/when the file differs", base, func() build { b := later(base); b.content = "other"; return b }(), commit, commit, false, false},
		{"two images/when the revision label differs", base, func() build { b := base; b.label = "004484fa5ff9"; return b }(), commit, commit, false, false},
		{"two images/when the epochs differ", base, base, commit, commit.Add(time.Second), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idA, outA := normalize(t, tt.a.saved(t), tt.epochA)
			idB, outB := normalize(t, tt.b.saved(t), tt.epochB)
			if (idA == idB) != tt.sameID {
				t.Errorf("IDs %s and %s, want same: %v", idA, idB, tt.sameID)
			}
			if bytes.Equal(outA, outB) != tt.sameFile {
				t.Errorf("archives equal: %v, want %v", !tt.sameFile, tt.sameFile)
			}
		})
	}
}

func TestNormalizeKeepsWhatTheImageRuns(t *testing.T) {
	epoch := time.Unix(1764051309, 0)
	b := build{at: time.Now(), container: "466182c8", label: "2b6d50e8d52b", content: "binary"}
	id, out := normalize(t, b.saved(t), epoch)
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		var body bytes.Buffer
		if _, err := body.ReadFrom(tr); err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = body.Bytes()
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || manifest[0].Config != strings.TrimPrefix(id, "sha256:")+".json" ||
		len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != "127.0.0.1:5000/counter:abc" || len(manifest[0].Layers) != 2 {
		t.Fatalf("manifest.json %s, want one image %s tagged 127.0.0.1:5000/counter:abc with 2 layers", files["manifest.json"], id)
	}
	var cfg struct {
		Created         string         `json:"created"`
		Container       *string        `json:"container"`
		ContainerConfig map[string]any `json:"container_config"`
		DockerVersion   *string        `json:"docker_version"`
		Config          struct {
			User         string
			Env          []string
			Entrypoint   []string
			ExposedPorts map[string]any
			Labels       map[string]string
			Image        string
		} `json:"config"`
		History []struct {
			Created string `json:"created"`
		} `json:"history"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[manifest[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	const want = "2025-11-25T06:15:09Z"
	if cfg.Created != want || cfg.History[0].Created != want || cfg.History[1].Created != want {
		t.Errorf("created %s, history %+v, want all %s", cfg.Created, cfg.History, want)
	}
	if cfg.Container != nil || cfg.ContainerConfig != nil || cfg.DockerVersion != nil || cfg.Config.Image != "" {
		t.Errorf("the build's container, engine or parent image is still in the config: %s", files[manifest[0].Config])
	}
	c := cfg.Config
	if c.User != "65532:65532" || len(c.Env) != 1 || len(c.Entrypoint) != 1 || c.ExposedPorts["8080/tcp"] == nil ||
		c.Labels["org.opencontainers.image.revision"] != "2b6d50e8d52b" {
		t.Errorf("config lost what the image runs: %+v", c)
	}
	for i, name := range manifest[0].Layers {
		if d := "sha256:" + strings.TrimSuffix(name, "/layer.tar"); cfg.RootFS.DiffIDs[i] != d || digest(files[name]) != d {
			t.Errorf("layer %d is %s, config says %s", i, name, cfg.RootFS.DiffIDs[i])
		}
		lr := tar.NewReader(bytes.NewReader(files[name]))
		hdr, err := lr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(epoch) || !hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() {
			t.Errorf("layer %d: app has times %v %v %v, want only mtime %v", i, hdr.ModTime, hdr.AccessTime, hdr.ChangeTime, epoch)
		}
	}
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct{ name, manifest, err string }{
		{"rejects/two images", `[{"Config":"c.json"},{"Config":"c.json"}]`, "wrote 2 images"},
		{"rejects/a missing layer", `[{"Config":"c.json","Layers":["nope/layer.tar"]}]`, "no layer nope/layer.tar"},
		{"rejects/a missing config", `[{"Config":"nope.json"}]`, "no config nope.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in bytes.Buffer
			w := tar.NewWriter(&in)
			for name, body := range map[string]string{"manifest.json": tt.manifest, "c.json": `{"rootfs":{"diff_ids":[]}}`} {
				_ = w.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))})
				_, _ = w.Write([]byte(body))
			}
			_ = w.Close()
			_, err := Normalize(&in, &bytes.Buffer{}, time.Unix(0, 0), "counter:x")
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}
