// Package helptext lays out the option and exit-code lines of the help the
// project's commands print (the deployer's and cmd/stack's), so that both
// wrap alike.
package helptext

import "strings"

// Width is the column help text wraps at.
const Width = 80

// Wrap writes head, then text wrapped at Width in a column of its own from
// col; when head reaches into that column (leaving less than one space
// before it), text starts on the next line instead. A word longer than the
// column has a line to itself, unbroken.
func Wrap(b *strings.Builder, col int, head, text string) {
	line := head
	if len(head) >= col-1 {
		b.WriteString(head + "\n")
		line = ""
	}
	line += strings.Repeat(" ", col-len(line))
	fresh := true
	for _, w := range strings.Fields(text) {
		if !fresh && len(line)+1+len(w) > Width {
			b.WriteString(line + "\n")
			line, fresh = strings.Repeat(" ", col), true
		}
		if !fresh {
			line += " "
		}
		line += w
		fresh = false
	}
	b.WriteString(line + "\n")
}
