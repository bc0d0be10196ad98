#include "method_form.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFormLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QScrollArea>
#include <QSpinBox>
#include <QVBoxLayout>

#include <climits>
#include <cmath>

namespace pocket::ui {

namespace {

QString rangeText(const ParamSpec& p)
{
    switch (p.kind) {
    case ParamKind::Int:
    case ParamKind::Float:
        return QStringLiteral("%1 … %2").arg(p.minValue, 0, 'g', 8).arg(p.maxValue, 0, 'g', 8);
    case ParamKind::Choice: {
        QStringList c;
        for (const auto& s : p.choices)
            c << QString::fromStdString(s);
        return c.join(QStringLiteral(" | "));
    }
    case ParamKind::Bool:
        return QStringLiteral("on | off");
    }
    return {};
}

} // namespace

MethodForm::MethodForm(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel(tr("Method:")));
    m_method = new QComboBox;
    top->addWidget(m_method, 1);
    auto* defaults = new QPushButton(tr("Defaults"));
    defaults->setToolTip(tr("Reset every setting of this method to its default"));
    top->addWidget(defaults);
    layout->addLayout(top);
    m_description = new QLabel;
    m_description->setWordWrap(true);
    m_description->setStyleSheet(QStringLiteral("color: palette(mid)"));
    layout->addWidget(m_description);

    auto* scroll = new QScrollArea;
    scroll->setWidgetResizable(true);
    scroll->setFrameShape(QFrame::NoFrame);
    m_fieldsHost = new QWidget;
    m_fields = new QFormLayout(m_fieldsHost);
    m_fields->setFieldGrowthPolicy(QFormLayout::AllNonFixedFieldsGrow);
    scroll->setWidget(m_fieldsHost);
    layout->addWidget(scroll, 1);
    m_error = new QLabel;
    m_error->setWordWrap(true);
    m_error->setStyleSheet(QStringLiteral("color: #b00020"));
    layout->addWidget(m_error);

    connect(m_method, &QComboBox::currentIndexChanged, this, [this] {
        if (m_building)
            return;
        rebuild();
        Q_EMIT changed();
    });
    connect(defaults, &QPushButton::clicked, this, [this] {
        m_remembered.remove(methodId());
        rebuild();
        Q_EMIT changed();
    });
}

void MethodForm::setRegistry(const MethodRegistry* registry)
{
    m_registry = registry;
    m_building = true;
    const QString previous = methodId();
    m_method->clear();
    if (registry)
        for (const CompressionMethod* m : registry->methods())
            m_method->addItem(QString::fromStdString(m->info().displayName), QString::fromStdString(m->info().id));
    const int index = m_method->findData(previous);
    m_method->setCurrentIndex(index >= 0 ? index : 0);
    m_building = false;
    rebuild();
}

QString MethodForm::methodId() const { return m_method->currentData().toString(); }

bool MethodForm::setMethodId(const QString& id)
{
    const int index = m_method->findData(id);
    if (index < 0)
        return false;
    m_method->setCurrentIndex(index); // rebuilds through the signal
    return true;
}

void MethodForm::rebuild()
{
    m_building = true;
    while (m_fields->rowCount() > 0)
        m_fields->removeRow(0);
    m_editors.clear();
    m_schema.clear();
    const CompressionMethod* method = nullptr;
    if (m_registry && !methodId().isEmpty())
        if (auto found = m_registry->find(methodId().toStdString()))
            method = *found;
    if (method) {
        const MethodInfo& info = method->info();
        m_description->setText(QString::fromStdString(info.description));
        m_schema = info.params;
        for (const ParamSpec& p : m_schema) {
            const QString tip = QStringLiteral("<b>%1</b>: %2<br>Allowed: %3<br>Default: %4")
                                    .arg(QString::fromStdString(p.name), QString::fromStdString(p.help).toHtmlEscaped(), rangeText(p),
                                         QString::fromStdString(p.defaultValue));
            QWidget* editor = nullptr;
            switch (p.kind) {
            case ParamKind::Int: {
                auto* spin = new QSpinBox;
                spin->setRange(static_cast<int>(std::max<double>(p.minValue, INT_MIN)), static_cast<int>(std::min<double>(p.maxValue, INT_MAX)));
                if (p.logScale)
                    spin->setStepType(QAbstractSpinBox::AdaptiveDecimalStepType);
                spin->setValue(QString::fromStdString(p.defaultValue).toInt());
                connect(spin, &QSpinBox::valueChanged, this, [this] { remember(); });
                editor = spin;
                break;
            }
            case ParamKind::Float: {
                auto* edit = new QLineEdit(QString::fromStdString(p.defaultValue));
                connect(edit, &QLineEdit::textChanged, this, [this] { remember(); });
                editor = edit;
                break;
            }
            case ParamKind::Choice: {
                auto* combo = new QComboBox;
                for (const auto& c : p.choices)
                    combo->addItem(QString::fromStdString(c));
                combo->setCurrentText(QString::fromStdString(p.defaultValue));
                connect(combo, &QComboBox::currentIndexChanged, this, [this] { remember(); });
                editor = combo;
                break;
            }
            case ParamKind::Bool: {
                auto* check = new QCheckBox;
                check->setChecked(p.defaultValue == "true");
                connect(check, &QCheckBox::toggled, this, [this] { remember(); });
                editor = check;
                break;
            }
            }
            editor->setObjectName(QStringLiteral("param_") + QString::fromStdString(p.name));
            editor->setToolTip(tip);
            auto* label = new QLabel(QString::fromStdString(p.name));
            label->setToolTip(tip);
            m_fields->addRow(label, editor);
            m_editors.push_back(editor);
        }
    } else {
        m_description->setText(tr("No compression method is available: no plugin was found."));
    }
    const auto remembered = m_remembered.value(methodId());
    m_building = false;
    if (!remembered.isEmpty())
        applySettings(remembered);
    m_error->setText(validationError());
}

QString MethodForm::fieldValue(int index) const
{
    const ParamSpec& p = m_schema[static_cast<std::size_t>(index)];
    QWidget* e = m_editors[static_cast<std::size_t>(index)];
    switch (p.kind) {
    case ParamKind::Int:
        return QString::number(static_cast<QSpinBox*>(e)->value());
    case ParamKind::Float:
        return static_cast<QLineEdit*>(e)->text().trimmed();
    case ParamKind::Choice:
        return static_cast<QComboBox*>(e)->currentText();
    case ParamKind::Bool:
        return static_cast<QCheckBox*>(e)->isChecked() ? QStringLiteral("true") : QStringLiteral("false");
    }
    return {};
}

std::vector<std::string> MethodForm::settings() const
{
    std::vector<std::string> out;
    for (std::size_t i = 0; i < m_schema.size(); ++i)
        out.push_back(m_schema[i].name + "=" + fieldValue(static_cast<int>(i)).toStdString());
    return out;
}

bool MethodForm::setValue(const QString& name, const QString& value)
{
    for (std::size_t i = 0; i < m_schema.size(); ++i) {
        if (QString::fromStdString(m_schema[i].name) != name)
            continue;
        QWidget* e = m_editors[i];
        switch (m_schema[i].kind) {
        case ParamKind::Int:
            static_cast<QSpinBox*>(e)->setValue(value.toInt());
            break;
        case ParamKind::Float:
            static_cast<QLineEdit*>(e)->setText(value);
            break;
        case ParamKind::Choice:
            static_cast<QComboBox*>(e)->setCurrentText(value);
            break;
        case ParamKind::Bool:
            static_cast<QCheckBox*>(e)->setChecked(value == QLatin1String("true") || value == QLatin1String("1"));
            break;
        }
        return true;
    }
    return false;
}

void MethodForm::applySettings(const QStringList& assignments)
{
    m_building = true;
    for (const QString& a : assignments) {
        const int eq = a.indexOf(QLatin1Char('='));
        if (eq > 0)
            setValue(a.left(eq), a.mid(eq + 1));
    }
    m_building = false;
    remember();
}

QString MethodForm::validationError() const
{
    if (m_schema.empty() && methodId().isEmpty())
        return tr("No method selected.");
    auto resolved = ParamSet::resolve(m_schema, settings());
    return resolved ? QString() : QString::fromStdString(resolved.message());
}

void MethodForm::remember()
{
    if (m_building)
        return;
    QStringList values;
    for (const std::string& s : settings())
        values << QString::fromStdString(s);
    m_remembered[methodId()] = values;
    m_error->setText(validationError());
    Q_EMIT changed();
}

QMap<QString, QStringList> MethodForm::rememberedSettings() const { return m_remembered; }

void MethodForm::setRememberedSettings(const QMap<QString, QStringList>& settings)
{
    m_remembered = settings;
    rebuild();
}

} // namespace pocket::ui
