package backup

import (
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/environment"
)

// Targets are the jobs of the environment files in dir, in pipeline order,
// for a manifest. A file that cannot be read is left out with a warning
// on warn: a backup is what saves a cluster, and a typo in an environment
// file must not stop one.
func Targets(dir string, warn io.Writer) []Target {
	var targets []Target
	for _, name := range environment.Pipeline(environment.List(dir)) {
		e, err := environment.Load(dir, name)
		if err != nil {
			fmt.Fprintf(warn, "warning: the manifest will not list environment %s: %v\n", name, err)
			continue
		}
		targets = append(targets, Target{Name: name, Namespace: e.Namespace, Job: e.Job})
	}
	return targets
}
