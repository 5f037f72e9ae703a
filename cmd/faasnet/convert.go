package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/units"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newConvertCmd) }

func newConvertCmd() *cobra.Command {
	var (
		chunkSize   string
		level       int
		prioritized []string
		insecure    []string
	)
	cmd := &cobra.Command{
		Use:   "convert SRC DST",
		Short: "Convert an image to eStargz, for lazy (on-demand) starts, and push it",
		Long: `Convert reads the image SRC from its registry, converts every layer to
eStargz (still a valid tar.gz, so other runtimes run it as before), keeps the
image's config (entrypoint, environment, platform), and pushes the result to
DST. An index converts every platform in it. Layers already in eStargz are
kept. Registries on loopback addresses are spoken to over plain HTTP.`,
		Example: "  faasnet convert 127.0.0.1:5000/fn/python:v1 127.0.0.1:5000/fn/python:v1-esgz",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := units.ParseSize(chunkSize)
			if err != nil || size <= 0 || size > lazy.MaxChunkSize {
				return fmt.Errorf("--chunk-size %q: want a size up to %s", chunkSize, units.FormatBytes(lazy.MaxChunkSize))
			}
			opts := []convert.ConvertOption{
				convert.WithChunkSize(int(size)),
				convert.WithCompressionLevel(level),
				convert.WithPrioritizedFiles(prioritized...),
				convert.WithInsecureRegistries(insecure...),
			}
			return runConvert(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], args[1], opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&chunkSize, "chunk-size", units.FormatBytes(convert.DefaultChunkSize), "size of the chunks files are cut into (the unit of on-demand reads)")
	f.IntVar(&level, "compression-level", convert.DefaultCompressionLevel, "gzip compression level, 1 (fast) to 9 (small)")
	f.StringSliceVar(&prioritized, "prioritize", nil, "files a container reads at start, put first in their layers for prefetching (repeat or comma-separate)")
	f.StringSliceVar(&insecure, "insecure-registry", nil, "registry (host[:port]) to speak plain HTTP to, besides loopback ones")
	return cmd
}

// runConvert converts src to dst, showing progress on progress and the
// summary on out.
func runConvert(ctx context.Context, out, progress io.Writer, src, dst string, opts []convert.ConvertOption) error {
	lastPush := -1
	opts = append(opts, convert.WithProgress(func(p convert.Progress) {
		switch p.Stage {
		case "layer":
			verb := "converted"
			if p.Kept {
				verb = "kept (already eStargz)"
			}
			fmt.Fprintf(progress, "%s layer %d/%d %s: %s -> %s, %s\n", p.Platform, p.Layer, p.Layers,
				abbrevDigest(p.Digest.String()), units.FormatBytes(p.Before), units.FormatBytes(p.After), verb)
		case "push":
			// One line per tenth pushed, not per update.
			if p.Total <= 0 {
				return
			}
			if tenth := int(10 * p.Pushed / p.Total); tenth > lastPush {
				lastPush = tenth
				fmt.Fprintf(progress, "pushing %s: %s of %s\n", dst, units.FormatBytes(p.Pushed), units.FormatBytes(p.Total))
			}
		}
	}))
	res, err := convert.Convert(ctx, src, dst, opts...)
	if err != nil {
		return err
	}
	change := 0.0
	if res.BytesBefore > 0 {
		change = 100 * float64(res.BytesAfter-res.BytesBefore) / float64(res.BytesBefore)
	}
	fmt.Fprintf(out, "%s@%s\n", strings.SplitN(dst, "@", 2)[0], res.Digest)
	fmt.Fprintf(out, "layers: %d converted, %d kept\n", res.Layers, res.Kept)
	fmt.Fprintf(out, "size before: %s (%d bytes)\n", units.FormatBytes(res.BytesBefore), res.BytesBefore)
	fmt.Fprintf(out, "size after:  %s (%d bytes, %+.1f%%)\n", units.FormatBytes(res.BytesAfter), res.BytesAfter, change)
	return nil
}

// abbrevDigest abbreviates a digest for progress lines.
func abbrevDigest(digest string) string {
	if _, hex, ok := strings.Cut(digest, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return digest
}
