package worker

import (
	"os/exec"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// TestSameIDInTwoClustersKeepsBothNetworks starts two sandboxed workers
// named vm-0 in two clusters on this machine, as tests and demos do side by
// side: the second's start must not remove the first's nftables table as a
// crashed predecessor's (it did when the table was named by the ID alone,
// and the first's containers lost their network).
func TestSameIDInTwoClustersKeepsBothNetworks(t *testing.T) {
	testenv.NeedContainers(t)
	testenv.NeedTool(t, "nft")
	var tables []string
	for range 2 {
		c := newCluster(t, time.Hour)
		run := testenv.RunDir(t)
		c.start("vm-0", func(cfg *Config) { cfg.Containers, cfg.RunDir = true, run })
		c.waitRegistered(1)
		tag, err := sandboxTag("vm-0", run)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, "faasnet-"+tag)
	}
	if tables[0] == tables[1] {
		t.Fatalf("both workers use table %s", tables[0])
	}
	for _, table := range tables {
		if out, err := exec.Command("nft", "list", "table", "inet", table).CombinedOutput(); err != nil {
			t.Errorf("table %s is gone with both workers running: %v\n%s", table, err, out)
		}
	}
}
