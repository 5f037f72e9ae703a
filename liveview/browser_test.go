package liveview_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// The live view in a real browser (Debian's chromium, headless, driven
// over the DevTools protocol) against a real manager and seven workers:
// after signing in with a token, the page draws the function's seven VMs,
// shows them turn ready, and redraws the tree when an interior VM leaves
// (its children under their new parents). It saves a screenshot: the path
// is in the log, or $FAASNET_SCREENSHOT if set.
func TestLiveViewInChromium(t *testing.T) {
	chrome := testenv.NeedTool(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sc := cluster.Scenario{ImageSize: 8 << 20, Layers: 2, Bandwidth: 8 << 20, RegistryBandwidth: 16 << 20, BlockSize: 128 << 10, Seed: 5}
	h, err := cluster.New(ctx, sc, cluster.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	alloc, stop := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // tests run as root
		// The demo's throwaway CA is not in the browser's store; the page
		// itself is what is under test here, not the certificate.
		chromedp.IgnoreCertErrors,
		chromedp.WindowSize(1400, 900),
	)...)
	defer stop()
	browser, closeBrowser := chromedp.NewContext(alloc)
	defer closeBrowser()
	// The first run on a context starts the browser and ties it to that
	// context; later runs use contexts derived from it, with deadlines.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}

	var cp cluster.ControlPlane
	var browserErr error
	const vms = 7
	// Stripe 0's drawing: with stripe trees every VM is drawn once per
	// stripe.
	nodes := `document.querySelectorAll('section[data-function="fn-0"] svg[data-stripe="0"] g.vm')`
	opts := cluster.RunOptions{Timeout: 2 * time.Minute}
	opts.OnDeploy = func(c cluster.ControlPlane) {
		cp = c
		tok, err := token.ReadFile(c.AdminTokenFile)
		if err != nil {
			browserErr = err
			return
		}
		// Sign in before the scale-out, so the page watches it happen.
		// (A click, not Submit: form.submit() skips the page's handler.)
		sctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		browserErr = chromedp.Do(sctx,
			chromedp.Navigate(c.URL+"/ui/"),
			chromedp.WaitVisible(`#login`),
			chromedp.SendKeys(`#token`, tok),
			chromedp.Click(`#login button`),
			chromedp.WaitVisible(`section[data-function="fn-0"]`),
		)
		if browserErr != nil {
			browserErr = fmt.Errorf("signing in on the page: %w", browserErr)
		}
	}
	opts.Hold = func(ctx context.Context, res *cluster.Result) {
		if browserErr != nil {
			return
		}
		browserErr = checkTree(ctx, browser, cp, nodes, vms)
	}
	res, err := h.Run(ctx, cluster.Faasnet{}, vms, opts)
	if err != nil {
		t.Fatal(err)
	}
	if browserErr != nil {
		t.Fatal(browserErr)
	}
	if res.Failed != 0 {
		t.Errorf("%d VMs failed: %s", res.Failed, res.Err)
	}
}

// checkTree waits until the page shows every VM ready, releases an
// interior VM through the API and waits until the page shows its children
// under new parents, then saves a screenshot.
func checkTree(ctx context.Context, browser context.Context, cp cluster.ControlPlane, nodes string, vms int) error {
	wctx, cancel := context.WithTimeout(browser, time.Minute)
	defer cancel()
	allReady := fmt.Sprintf(`%s.length === %d && [...%s].every(g => g.dataset.state === "ready")`, nodes, vms, nodes)
	if _, err := chromedp.Run(wctx, chromedp.Poll[bool](allReady)); err != nil {
		return fmt.Errorf("the page never showed %d ready VMs: %w", vms, err)
	}
	admin, err := operator(cp)
	if err != nil {
		return err
	}
	tree, err := admin.Tree(ctx, "fn-0")
	if err != nil {
		return err
	}
	var leaving string
	var children []string
	for _, n := range tree.Nodes {
		if n.Parent != nil && len(n.Children) > 0 {
			leaving, children = n.VM, n.Children
			break
		}
	}
	if leaving == "" {
		return fmt.Errorf("no interior VM below the root in %+v", tree)
	}
	if err := admin.Release(ctx, "fn-0", leaving); err != nil {
		return err
	}
	moved := fmt.Sprintf(`%s.length === %d && !document.querySelector('g.vm[data-vm=%q]') && %q.split(",").every(c => { const g = document.querySelector('g.vm[data-vm="' + c + '"]'); return g && g.dataset.parent !== %q && g.dataset.parent !== "" })`,
		nodes, vms-1, leaving, strings.Join(children, ","), leaving)
	if _, err := chromedp.Run(wctx, chromedp.Poll[bool](moved)); err != nil {
		return fmt.Errorf("the page did not redraw %s's children %v under new parents: %w", leaving, children, err)
	}
	png, err := chromedp.Run(wctx, chromedp.FullScreenshot(100))
	if err != nil {
		return err
	}
	path := os.Getenv("FAASNET_SCREENSHOT")
	if path == "" {
		path = filepath.Join(os.TempDir(), "faasnet-liveview.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "live view screenshot: %s\n", path)
	return checkFolding(wctx, cp, nodes, vms-1)
}

// checkFolding opens the page drawing one level (?levels=1): the root
// alone, with the other VMs folded below it and counted; "show all" draws
// them all, and zooming in draws the tree larger, to scroll.
func checkFolding(ctx context.Context, cp cluster.ControlPlane, nodes string, vms int) error {
	folded := `document.querySelector('section[data-function="fn-0"] svg[data-stripe="0"] g.folded')`
	one := fmt.Sprintf(`%s.length === 1 && %s !== null && %s.dataset.count === "%d"`, nodes, folded, folded, vms-1)
	if err := chromedp.Do(ctx, chromedp.Navigate(cp.URL+"/ui/?levels=1")); err != nil {
		return err
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](one)); err != nil {
		return fmt.Errorf("with ?levels=1 the page did not show the root alone with %d VMs folded below: %w", vms-1, err)
	}
	all := fmt.Sprintf(`%s.length === %d && document.querySelector('g.folded') === null`, nodes, vms)
	zoomed := `(() => { const s = document.querySelector('section[data-function="fn-0"] svg'); return s.classList.contains("zoomed") && s.getBoundingClientRect().width > 0 })()`
	if err := chromedp.Do(ctx, chromedp.Click(`section[data-function="fn-0"] button.expand`)); err != nil {
		return err
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](all)); err != nil {
		return fmt.Errorf("show all did not draw the %d VMs: %w", vms, err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`#zoom-in`)); err != nil {
		return err
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](zoomed)); err != nil {
		return fmt.Errorf("zooming in did not redraw the tree: %w", err)
	}
	return nil
}

// operator is an admin client for the deployment's manager.
func operator(cp cluster.ControlPlane) (*api.Client, error) {
	b, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCert(b)
	if err != nil {
		return nil, err
	}
	tok, err := token.ReadFile(cp.AdminTokenFile)
	if err != nil {
		return nil, err
	}
	return api.NewTLSClient(cp.URL, pki.NewVerifier(ca, nil).ManagerClient(nil), tok), nil
}
