// Package docs holds the project's documentation pages, and the tests that
// keep them honest without a server: every command block a user would
// paste names who runs it as written, every relative link leads to a file
// (and heading) that exists, and the README names every package.
package docs
