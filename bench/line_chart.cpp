// Draws y against x from a CSV, one line per series (points joined in x order), and saves a PNG.
// For the memory/speed curves of running archives (bench/memory_speed.sh). No LibTorch here.
// Run: build/bin/line_chart DATA.csv OUT.png --title T --xlabel X --ylabel Y
// CSV columns: series,x,y (a header line is skipped).
#include <qcustomplot.h>

#include <QApplication>
#include <QFile>
#include <QTextStream>

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

int main(int argc, char** argv)
{
    qputenv("QT_QPA_PLATFORM", qgetenv("QT_QPA_PLATFORM").isEmpty() ? QByteArray("offscreen") : qgetenv("QT_QPA_PLATFORM"));
    QApplication app(argc, argv);
    const QStringList args = app.arguments();
    if (args.size() < 3) {
        std::fprintf(stderr, "usage: line_chart DATA.csv OUT.png [--title T] [--xlabel X] [--ylabel Y]\n");
        return 2;
    }
    QString title, xlabel = "x", ylabel = "y";
    for (int i = 3; i + 1 < args.size(); ++i) {
        if (args[i] == "--title") title = args[i + 1];
        if (args[i] == "--xlabel") xlabel = args[i + 1];
        if (args[i] == "--ylabel") ylabel = args[i + 1];
    }
    QFile file(args[1]);
    if (!file.open(QIODevice::ReadOnly)) {
        std::fprintf(stderr, "cannot read %s\n", qPrintable(args[1]));
        return 1;
    }
    std::map<QString, std::vector<std::pair<double, double>>> series;
    std::vector<QString> order;
    QTextStream in(&file);
    bool header = true;
    while (!in.atEnd()) {
        const QStringList f = in.readLine().split(',');
        if (header) {
            header = false;
            continue;
        }
        if (f.size() < 3)
            continue;
        bool okX = false, okY = false;
        const double x = f[1].toDouble(&okX), y = f[2].toDouble(&okY);
        if (!okX || !okY)
            continue;
        if (!series.count(f[0]))
            order.push_back(f[0]);
        series[f[0]].push_back({x, y});
    }
    QCustomPlot plot;
    plot.resize(900, 560);
    plot.legend->setVisible(true);
    plot.axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignLeft);
    plot.xAxis->setLabel(xlabel);
    plot.yAxis->setLabel(ylabel);
    if (!title.isEmpty()) {
        plot.plotLayout()->insertRow(0);
        plot.plotLayout()->addElement(0, 0, new QCPTextElement(&plot, title, QFont("sans", 11, QFont::Bold)));
    }
    const QList<QColor> colours{QColor(0x1f, 0x77, 0xb4), QColor(0xd6, 0x27, 0x28), QColor(0x2c, 0xa0, 0x2c), QColor(0xff, 0x7f, 0x0e),
                                QColor(0x94, 0x67, 0xbd), QColor(0x8c, 0x56, 0x4b), QColor(0x7f, 0x7f, 0x7f), QColor(0x17, 0xbe, 0xcf)};
    const QList<QCPScatterStyle::ScatterShape> shapes{QCPScatterStyle::ssCircle, QCPScatterStyle::ssSquare, QCPScatterStyle::ssTriangle,
                                                      QCPScatterStyle::ssDiamond, QCPScatterStyle::ssCross, QCPScatterStyle::ssStar};
    double xmax = 0, ymax = 0;
    for (std::size_t s = 0; s < order.size(); ++s) {
        auto points = series[order[s]];
        std::sort(points.begin(), points.end());
        QCPGraph* g = plot.addGraph();
        g->setName(order[s]);
        const QColor c = colours[static_cast<int>(s) % colours.size()];
        g->setPen(QPen(c, 2));
        g->setScatterStyle(QCPScatterStyle(shapes[static_cast<int>(s) % shapes.size()], c, c, 8));
        for (const auto& [x, y] : points) {
            g->addData(x, y);
            xmax = std::max(xmax, x);
            ymax = std::max(ymax, y);
        }
    }
    plot.xAxis->setRange(0, xmax * 1.08);
    plot.yAxis->setRange(0, ymax * 1.12);
    if (!plot.savePng(args[2])) {
        std::fprintf(stderr, "cannot write %s\n", qPrintable(args[2]));
        return 1;
    }
    return 0;
}
