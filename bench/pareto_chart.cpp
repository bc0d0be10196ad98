// Draws perplexity against bits per weight from a CSV of runs, one colour per method, with each
// method's Pareto front (the best perplexity reached at or below each bpw), and saves a PNG.
// No LibTorch here (QCustomPlot and torch never share a translation unit).
// Run: build/bin/pareto_chart RESULTS.csv OUT.png [--title T] [--reference PPL] [--xmin X] [--xmax X] [--ymax P]
// (points outside [xmin, xmax] or above ymax are left out; each method gets its own colour and marker)
// CSV columns: method,label,bpw,perplexity (a header line is skipped).
#include <qcustomplot.h>

#include <QApplication>
#include <QFile>
#include <QTextStream>

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

namespace {
struct Point {
    double bpw = 0;
    double ppl = 0;
};
} // namespace

int main(int argc, char** argv)
{
    qputenv("QT_QPA_PLATFORM", qgetenv("QT_QPA_PLATFORM").isEmpty() ? QByteArray("offscreen") : qgetenv("QT_QPA_PLATFORM"));
    QApplication app(argc, argv);
    const QStringList args = app.arguments();
    if (args.size() < 3) {
        std::fprintf(stderr, "usage: pareto_chart RESULTS.csv OUT.png [--title T] [--reference PPL] [--xmin X] [--xmax X] [--ymax P]\n");
        return 2;
    }
    QString title = "perplexity vs bits per weight";
    double reference = 0, xmin = -1e300, xmax = 1e300, ymax = 1e300;
    for (int i = 3; i + 1 < args.size(); ++i) {
        if (args[i] == "--title")
            title = args[i + 1];
        if (args[i] == "--reference")
            reference = args[i + 1].toDouble();
        if (args[i] == "--xmin")
            xmin = args[i + 1].toDouble();
        if (args[i] == "--xmax")
            xmax = args[i + 1].toDouble();
        if (args[i] == "--ymax")
            ymax = args[i + 1].toDouble();
    }
    QFile file(args[1]);
    if (!file.open(QIODevice::ReadOnly | QIODevice::Text)) {
        std::fprintf(stderr, "%s: cannot open\n", qPrintable(args[1]));
        return 1;
    }
    std::map<QString, std::vector<Point>> byMethod;
    QTextStream in(&file);
    while (!in.atEnd()) {
        const QStringList f = in.readLine().split(',');
        bool okBpw = false, okPpl = false;
        if (f.size() < 4)
            continue;
        const double bpw = f[2].toDouble(&okBpw), ppl = f[3].toDouble(&okPpl);
        if (okBpw && okPpl && ppl > 0 && bpw >= xmin && bpw <= xmax && ppl <= ymax)
            byMethod[f[0]].push_back({bpw, ppl});
    }
    if (byMethod.empty()) {
        std::fprintf(stderr, "%s: no rows of method,label,bpw,perplexity\n", qPrintable(args[1]));
        return 1;
    }

    QCustomPlot plot;
    plot.resize(900, 600);
    plot.plotLayout()->insertRow(0);
    plot.plotLayout()->addElement(0, 0, new QCPTextElement(&plot, title, QFont("sans", 12, QFont::Bold)));
    plot.xAxis->setLabel("bits per weight over compressed matrices (bpw_c)");
    plot.yAxis->setLabel("perplexity (log scale)");
    plot.yAxis->setScaleType(QCPAxis::stLogarithmic);
    plot.yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    const QList<QColor> colours{Qt::blue, Qt::red, QColor(0, 150, 0), Qt::magenta, QColor(230, 130, 0), Qt::darkCyan, Qt::black,
                                QColor(140, 90, 40), Qt::gray};
    const QList<QCPScatterStyle::ScatterShape> shapes{QCPScatterStyle::ssDisc,    QCPScatterStyle::ssSquare,  QCPScatterStyle::ssDiamond,
                                                      QCPScatterStyle::ssTriangle, QCPScatterStyle::ssCross,  QCPScatterStyle::ssPlus,
                                                      QCPScatterStyle::ssStar,     QCPScatterStyle::ssCircle, QCPScatterStyle::ssTriangleInverted};
    int c = 0;
    double minX = 1e9, maxX = 0, minY = 1e9, maxY = 0;
    for (auto& [method, points] : byMethod) {
        std::sort(points.begin(), points.end(), [](const Point& a, const Point& b) { return a.bpw < b.bpw; });
        const QCPScatterStyle::ScatterShape shape = shapes[c % shapes.size()];
        const QColor colour = colours[c++ % colours.size()];
        QCPGraph* all = plot.addGraph();
        all->setLineStyle(QCPGraph::lsNone);
        all->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, colour, 5));
        all->removeFromLegend();
        QCPGraph* front = plot.addGraph();
        front->setName(method);
        front->setPen(QPen(colour, 2));
        front->setScatterStyle(QCPScatterStyle(shape, colour, 8));
        double best = 1e300;
        for (const Point& p : points) {
            all->addData(p.bpw, p.ppl);
            if (p.ppl < best) { // on the front: better than everything at fewer bits
                best = p.ppl;
                front->addData(p.bpw, p.ppl);
            }
            minX = std::min(minX, p.bpw);
            maxX = std::max(maxX, p.bpw);
            minY = std::min(minY, p.ppl);
            maxY = std::max(maxY, p.ppl);
        }
    }
    if (reference > 0) {
        QCPItemStraightLine* line = new QCPItemStraightLine(&plot);
        line->point1->setCoords(0, reference);
        line->point2->setCoords(1, reference);
        line->setPen(QPen(Qt::gray, 1, Qt::DashLine));
        minY = std::min(minY, reference);
    }
    plot.xAxis->setRange(std::max(0.0, minX - 0.3), maxX + 0.3);
    plot.yAxis->setRange(minY * 0.9, maxY * 1.2);
    plot.legend->setVisible(true);
    plot.axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    if (!plot.savePng(args[2], 900, 600)) {
        std::fprintf(stderr, "%s: cannot write the PNG\n", qPrintable(args[2]));
        return 1;
    }
    std::printf("wrote %s (%zu methods)\n", qPrintable(args[2]), byMethod.size());
    return 0;
}
