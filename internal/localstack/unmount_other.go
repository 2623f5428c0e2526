//go:build !linux

package localstack

// unmountUnder has nothing to do off Linux: the mounts it takes off are
// those Nomad's Linux client makes in its allocation folders. The stack
// itself runs on Linux only; this lets the packages that import it build
// (and their -short tests run) on a contributor's macOS.
func unmountUnder(dir string) error { return nil }
