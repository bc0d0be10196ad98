// The screenshot tour behind `pocketllm --screenshots DIR` (scripts/screenshots.sh): a short
// compression and evaluation of the bundled demo model, a sensitivity analysis and a plan, with
// each main view saved as a PNG. GUI thread only.
#pragma once

#include <QString>

namespace pocket::ui {

class MainWindow;
class Workbench;

// Runs the tour on `window` (driven by `wb`) and writes the PNG files into `dir`; 0 on success.
int renderScreenshots(Workbench& wb, MainWindow& window, const QString& dir);

} // namespace pocket::ui
