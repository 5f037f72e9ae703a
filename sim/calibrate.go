package sim

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// Measured is a makespan measured by the emulation (faasnet bench): real
// workers on one machine with per-VM bandwidth limits. It is the seam
// between the two: the bench turns each of its runs into a Measured, and
// Calibrate runs the same scenario here.
type Measured struct {
	Strategy Strategy `json:"strategy"`
	VMs      int      `json:"vms"`
	// Makespan in seconds, from the scale-out request to the last VM
	// ready, measured as ScaleOut measures it.
	Makespan float64 `json:"makespan_s"`
}

// CalibrationRow puts a simulated and an emulated makespan side by side.
type CalibrationRow struct {
	Strategy  Strategy `json:"strategy"`
	VMs       int      `json:"vms"`
	Simulated float64  `json:"simulated_s"`
	Emulated  float64  `json:"emulated_s"`
	// Ratio is Simulated/Emulated; Within reports whether it is within
	// the tolerance of 1.
	Ratio  float64 `json:"ratio"`
	Within bool    `json:"within"`
}

// Calibrate simulates each measured scenario with cfg (its VMs and
// containers set from the measurement: one container per VM) and compares
// the makespans. cfg must describe the bench's image, limits and block size.
// A ratio off by more than tolerance (0.2 for 20%) means one of the two is
// wrong, and is reported, not an error.
func Calibrate(cfg Config, ms []Measured, tolerance float64) ([]CalibrationRow, error) {
	rows := make([]CalibrationRow, 0, len(ms))
	for _, m := range ms {
		c := cfg
		c.VMs, c.Containers, c.Functions = m.VMs, m.VMs, 1
		r, err := ScaleOut(c, m.Strategy)
		if err != nil {
			return nil, fmt.Errorf("simulating %s on %d VMs: %w", m.Strategy, m.VMs, err)
		}
		row := CalibrationRow{Strategy: m.Strategy, VMs: m.VMs, Simulated: r.Makespan, Emulated: m.Makespan}
		if m.Makespan > 0 {
			row.Ratio = r.Makespan / m.Makespan
			row.Within = math.Abs(row.Ratio-1) <= tolerance
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// WriteCalibration writes calibration rows as an aligned table.
func WriteCalibration(w io.Writer, rows []CalibrationRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tVMs\tsimulated\temulated\tratio\twithin\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.2f\t%v\t\n", r.Strategy, r.VMs, secs(r.Simulated), secs(r.Emulated), r.Ratio, r.Within)
	}
	return tw.Flush()
}
