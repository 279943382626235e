// Command etcd is upstream etcd, built from the Go module proxy.
// go install of go.etcd.io/etcd/server/v3 fails (its go.mod replaces sibling modules with
// relative paths), so this main module calls etcdmain.Main as etcd's own server/main.go does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
