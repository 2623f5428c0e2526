// Package imageref parses image references, refuses mutable ones, and pins a
// tag to its digest where the image's registry answers.
package imageref

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Ref is a parsed image reference: [REGISTRY/]REPO[:TAG][@DIGEST].
type Ref struct {
	Registry string // host[:port], "" for Docker Hub
	Repo     string
	Tag      string
	Digest   string // sha256:...
}

var (
	repoRE   = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+|__)*(/[a-z0-9]+([._-][a-z0-9]+|__)*)*$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// Parse parses ref and refuses references that do not pin a build: no tag,
// or the mutable tag "latest", without a digest.
func Parse(ref string) (Ref, error) {
	var r Ref
	rest := ref
	if i := strings.Index(rest, "@"); i >= 0 {
		r.Digest, rest = rest[i+1:], rest[:i]
		if !digestRE.MatchString(r.Digest) {
			return r, fmt.Errorf("image %q: digest %q is not sha256:<64 hex digits>", ref, r.Digest)
		}
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		r.Tag, rest = rest[i+1:], rest[:i]
		if !tagRE.MatchString(r.Tag) {
			return r, fmt.Errorf("image %q: %q is not a valid tag", ref, r.Tag)
		}
	}
	if i := strings.Index(rest, "/"); i >= 0 {
		if host := rest[:i]; strings.ContainsAny(host, ".:") || host == "localhost" {
			r.Registry, rest = host, rest[i+1:]
		}
	}
	r.Repo = rest
	if !repoRE.MatchString(r.Repo) {
		return r, fmt.Errorf("image %q: %q is not a valid repository name", ref, r.Repo)
	}
	if r.Digest == "" {
		switch r.Tag {
		case "":
			return r, fmt.Errorf("image %q has no tag: a release pins one build; use the tag `deployer build` printed, or REPO@sha256:...", ref)
		case "latest":
			return r, fmt.Errorf("image %q uses the mutable tag \"latest\": a release pins one build; use the tag `deployer build` printed, or REPO@sha256:...", ref)
		}
	}
	return r, nil
}

// Name is REGISTRY/REPO.
func (r Ref) Name() string {
	if r.Registry == "" {
		return r.Repo
	}
	return r.Registry + "/" + r.Repo
}

// String is the reference as given.
func (r Ref) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Pinned is the reference a job should run: REGISTRY/REPO@DIGEST when the
// digest is known, the tag otherwise.
func (r Ref) Pinned() string {
	if r.Digest != "" {
		return r.Name() + "@" + r.Digest
	}
	return r.String()
}

// Image is what a registry told about a reference.
type Image struct {
	Ref
	Revision string // the org.opencontainers.image.revision label, if any
	Resolved bool   // the registry answered
}

// ErrNotFound means the registry answered and has no such image.
var ErrNotFound = errors.New("image not found in its registry")

// Resolver asks registries for digests.
type Resolver struct {
	Client *http.Client
}

// Resolve asks the image's registry for its digest and revision label. An
// image with no registry host (Docker Hub) or whose registry does not answer
// comes back unresolved with no error; one the registry does not have is
// ErrNotFound.
func (res Resolver) Resolve(ctx context.Context, r Ref) (Image, error) {
	img := Image{Ref: r}
	if r.Registry == "" {
		return img, nil
	}
	c := res.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	base := "https://" + r.Registry
	if loopback(r.Registry) {
		base = "http://" + r.Registry
	}
	ref := r.Tag
	if r.Digest != "" {
		ref = r.Digest
	}
	var manifest struct {
		MediaType string `json:"mediaType"`
		Config    struct {
			Digest string `json:"digest"`
		} `json:"config"`
	}
	digest, err := getJSON(ctx, c, base+"/v2/"+r.Repo+"/manifests/"+ref, manifestTypes, &manifest)
	if err != nil {
		var netErr net.Error
		if errors.As(err, &netErr) || errors.Is(err, errNoAnswer) {
			return img, nil
		}
		return img, fmt.Errorf("image %s: %w", r, err)
	}
	if r.Digest != "" && digest != "" && digest != r.Digest {
		return img, fmt.Errorf("image %s: registry serves digest %s", r, digest)
	}
	if digest != "" {
		img.Digest = digest
	}
	img.Resolved = true
	if manifest.Config.Digest != "" {
		var cfg struct {
			Config struct {
				Labels map[string]string `json:"Labels"`
			} `json:"config"`
		}
		if _, err := getJSON(ctx, c, base+"/v2/"+r.Repo+"/blobs/"+manifest.Config.Digest, "*/*", &cfg); err == nil {
			img.Revision = cfg.Config.Labels["org.opencontainers.image.revision"]
		}
	}
	return img, nil
}

var manifestTypes = strings.Join([]string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.index.v1+json",
}, ", ")

var errNoAnswer = errors.New("registry did not answer")

func getJSON(ctx context.Context, c *http.Client, url, accept string, v any) (digest string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", accept)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", ErrNotFound
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode >= 500:
		// Registries that want a token, or are down, count as not
		// answering: the image stays pinned by tag.
		return "", errNoAnswer
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// loopback reports whether a registry host is on this machine, where
// registries serve plain HTTP as Docker itself allows.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
