package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/pyimage"
	"github.com/faasnet/faasnet/units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newImageCmd) }

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build function images",
	}
	cmd.AddCommand(newImagePythonCmd())
	return cmd
}

func newImagePythonCmd() *cobra.Command {
	var (
		opts         pyimage.Options
		push         string
		pushLazy     string
		convertCache bool
	)
	cmd := &cobra.Command{
		Use:   "python [--push REF] [--cache DIR]",
		Short: "Build a Python function image with heavy scientific packages, like the FaaSNet paper's",
		Long: `Build, from Debian packages only, an image of Debian with Python 3, numpy
and scipy (not imported at start) and a small HTTP handler on $PORT
(GET /healthz, GET /, GET /compute), one layer per step. The system layers
are cached, so only the first build takes minutes; it needs root and
debootstrap. With --push the image is pushed to REF (plain HTTP for a
registry on a loopback address). With --convert-cache its eStargz
conversion is kept too, beside the layers' cache, where demo --lazy, bench
--lazy and the tests find it instead of converting again; --push-estargz
REF pushes that conversion to REF.`,
		Example: "  faasnet image python --push 127.0.0.1:5000/fn/python:v1",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Progress = cmd.ErrOrStderr()
			return runImagePython(cmd.Context(), cmd.OutOrStdout(), opts, push, pushLazy, convertCache)
		},
	}
	f := cmd.Flags()
	f.StringVar(&push, "push", "", "push the image to this reference, e.g. 127.0.0.1:5000/fn/python:v1")
	f.StringVar(&pushLazy, "push-estargz", "", "push the image's eStargz conversion, cached as with --convert-cache, to this reference")
	f.BoolVar(&convertCache, "convert-cache", false, "also convert the image to eStargz and cache the conversion beside the layers (DIR/../estargz)")
	f.StringVar(&opts.CacheDir, "cache", pyimage.DefaultCacheDir(), "directory that caches the built layers")
	f.StringVar(&opts.Mirror, "mirror", "", "Debian mirror (default: apt's configured source, or "+pyimage.DefaultMirror+")")
	f.StringVar(&opts.Suite, "suite", pyimage.DefaultSuite, "Debian release")
	f.StringSliceVar(&opts.Packages, "package", pyimage.DefaultPackages, "Debian packages of the scientific layer (repeat or comma-separate)")
	f.BoolVarP(&opts.Verbose, "verbose", "v", false, "show the output of debootstrap and apt")
	return cmd
}

func runImagePython(ctx context.Context, out io.Writer, opts pyimage.Options, push, pushLazy string, convertCache bool) error {
	img, err := pyimage.Build(ctx, opts)
	if err != nil {
		return err
	}
	if err := printLayers(out, img); err != nil {
		return err
	}
	if convertCache || pushLazy != "" {
		start := time.Now()
		fn := &cluster.Function{Image: img, CacheDir: cluster.ConvertCacheDir(opts.CacheDir), Progress: opts.Progress}
		lz, entry, err := cluster.CacheConversion(ctx, fn)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "eStargz conversion cached in %s (%v)\n", entry, time.Since(start).Round(time.Millisecond))
		if pushLazy != "" {
			if err := pushImage(ctx, out, opts.Progress, lz, pushLazy); err != nil {
				return err
			}
		}
	}
	if push == "" {
		return nil
	}
	return pushImage(ctx, out, opts.Progress, img, push)
}

// pushImage pushes img to ref, showing progress on progress.
func pushImage(ctx context.Context, out, progress io.Writer, img v1.Image, push string) error {
	start := time.Now()
	updates := make(chan v1.Update, 16)
	done := make(chan struct{})
	go func() { // owned here: remote.Write closes updates when it returns
		defer close(done)
		showPushProgress(progress, updates)
	}()
	err := imagegen.Push(ctx, img, push, remote.WithProgress(updates))
	<-done
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pushed %s@%s in %v\n", push, d, time.Since(start).Round(time.Millisecond))
	return nil
}

// printLayers writes a table of the image's layers and their total size.
func printLayers(out io.Writer, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tSIZE\tDIGEST\tCREATED BY")
	var total int64
	for i, l := range layers {
		size, err := l.Size()
		if err != nil {
			return err
		}
		d, err := l.Digest()
		if err != nil {
			return err
		}
		total += size
		createdBy := ""
		if i < len(cf.History) {
			createdBy = cf.History[i].CreatedBy
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", i+1, units.FormatBytes(size), d.Hex[:12], createdBy)
	}
	fmt.Fprintf(tw, "total\t%s\t\t(compressed, %d bytes)\n", units.FormatBytes(total), total)
	return tw.Flush()
}

// showPushProgress reports every tenth of the upload on w until updates is
// closed.
func showPushProgress(w io.Writer, updates <-chan v1.Update) {
	last := int64(-1)
	for u := range updates {
		if u.Error != nil || u.Total == 0 {
			continue
		}
		if tenth := 10 * u.Complete / u.Total; tenth > last {
			last = tenth
			fmt.Fprintf(w, "pushing: %s of %s\n", units.FormatBytes(u.Complete), units.FormatBytes(u.Total))
		}
	}
}
