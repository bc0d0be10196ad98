// The method chooser and its settings form, generated from the method's parameter schema
// (ParamSpec: integer spin boxes, real-valued fields, choice lists, check boxes, each with its
// range and help as tooltip). Values are validated by core's ParamSet::resolve, the same check
// the CLI's --set goes through. Settings are remembered per method. GUI thread only.
#pragma once

#include "pocket/methods/method_registry.h"

#include <QMap>
#include <QStringList>
#include <QWidget>

#include <string>
#include <vector>

class QComboBox;
class QFormLayout;
class QLabel;

namespace pocket::ui {

class MethodForm : public QWidget {
    Q_OBJECT
public:
    explicit MethodForm(QWidget* parent = nullptr);

    // Lists the registry's enabled methods (the registry must outlive the form).
    void setRegistry(const pocket::MethodRegistry* registry);
    QString methodId() const;
    bool setMethodId(const QString& id);
    // "name=value" for every parameter of the current method, as shown.
    std::vector<std::string> settings() const;
    // Sets fields from "name=value" entries (unknown names are ignored).
    void applySettings(const QStringList& assignments);
    // The reason the current values are invalid, or "" when they resolve.
    QString validationError() const;
    // Settings of every method the user has touched, for QSettings; and back.
    QMap<QString, QStringList> rememberedSettings() const;
    void setRememberedSettings(const QMap<QString, QStringList>& settings);
    // Sets one field by name (tests, scripts); false if the method has no such parameter.
    bool setValue(const QString& name, const QString& value);

Q_SIGNALS:
    // Any field or the method changed.
    void changed();

private:
    void rebuild();
    void remember();
    QString fieldValue(int index) const;

    const pocket::MethodRegistry* m_registry = nullptr;
    QComboBox* m_method;
    QLabel* m_description;
    QWidget* m_fieldsHost;
    QFormLayout* m_fields;
    QLabel* m_error;
    std::vector<pocket::ParamSpec> m_schema;
    std::vector<QWidget*> m_editors;
    QMap<QString, QStringList> m_remembered;
    bool m_building = false;
};

} // namespace pocket::ui
