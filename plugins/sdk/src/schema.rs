//! Builders for `describe`: the schema of the types a plugin serves.
//!
//! ```ignore
//! PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).with_type(
//!     ResourceType::new("OS::Heat::RandomString")
//!         .description("A random string.")
//!         .property(Property::integer("length").default(json!(32)).range(1.0, 512.0))
//!         .attribute("value", "The generated string."),
//! )
//! ```

use serde_json::Value;

use crate::{
    AttributeSchema, Bounds, Constraint, PluginInfo, PropertySchema, PropertyType, TypeSchema,
};

/// Builder of one property's schema. Starts optional, not update-allowed, not immutable, with
/// no default, description or constraints.
#[derive(Debug, Clone)]
pub struct Property(PropertySchema);

impl Property {
    /// A property of any [`PropertyType`].
    pub fn new(name: impl Into<String>, type_: PropertyType) -> Self {
        Property(PropertySchema {
            name: name.into(),
            description: String::new(),
            type_,
            required: false,
            default: None,
            update_allowed: false,
            immutable: false,
            constraints: Vec::new(),
        })
    }

    /// A string property.
    pub fn string(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::String)
    }

    /// A number (integer or float) property.
    pub fn number(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Number)
    }

    /// An integer property.
    pub fn integer(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Integer)
    }

    /// A boolean property.
    pub fn boolean(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Boolean)
    }

    /// A list property.
    pub fn list(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::List)
    }

    /// A map (JSON object) property.
    pub fn map(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Map)
    }

    /// A property taking any JSON value.
    pub fn any(name: impl Into<String>) -> Self {
        Self::new(name, PropertyType::Any)
    }

    /// Sets the help text.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.0.description = text.into();
        self
    }

    /// The template must set it.
    pub fn required(mut self) -> Self {
        self.0.required = true;
        self
    }

    /// A change is applied by an in-place `update` (otherwise it replaces the resource).
    pub fn update_allowed(mut self) -> Self {
        self.0.update_allowed = true;
        self
    }

    /// Can never change after create (not even by replacement).
    pub fn immutable(mut self) -> Self {
        self.0.immutable = true;
        self
    }

    /// The value used when the template does not set it.
    pub fn default(mut self, value: Value) -> Self {
        self.0.default = Some(value.to_string());
        self
    }

    /// Adds a constraint the host checks before calling the plugin.
    pub fn constraint(mut self, constraint: Constraint) -> Self {
        self.0.constraints.push(constraint);
        self
    }

    /// Shorthand for `constraint(Constraint::range(Some(min), Some(max)))`.
    pub fn range(self, min: f64, max: f64) -> Self {
        self.constraint(Constraint::range(Some(min), Some(max)))
    }

    /// Shorthand for `constraint(Constraint::allowed_values(values))`.
    pub fn allowed_values<I>(self, values: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Value>,
    {
        self.constraint(Constraint::allowed_values(values))
    }

    /// The finished schema.
    pub fn build(self) -> PropertySchema {
        self.0
    }
}

impl From<Property> for PropertySchema {
    fn from(p: Property) -> Self {
        p.0
    }
}

impl Constraint {
    /// A numeric value within inclusive bounds (`None` leaves a side open).
    pub fn range(min: Option<f64>, max: Option<f64>) -> Self {
        Constraint::Range(Bounds { min, max })
    }

    /// The length of a string, list or map within inclusive bounds.
    pub fn length(min: Option<f64>, max: Option<f64>) -> Self {
        Constraint::Length(Bounds { min, max })
    }

    /// The value must equal one of these.
    pub fn allowed_values<I>(values: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Value>,
    {
        Constraint::AllowedValues(values.into_iter().map(|v| v.into().to_string()).collect())
    }

    /// A string matching this regular expression as a whole.
    pub fn pattern(regex: impl Into<String>) -> Self {
        Constraint::AllowedPattern(regex.into())
    }
}

/// Builder of one served type's schema. Properties are closed unless
/// [`open_properties`](Self::open_properties) is called.
#[derive(Debug, Clone)]
pub struct ResourceType(TypeSchema);

impl ResourceType {
    /// A type templates name as `type_name`, e.g. `OS::Heat::None`.
    pub fn new(type_name: impl Into<String>) -> Self {
        ResourceType(TypeSchema {
            type_name: type_name.into(),
            description: String::new(),
            properties: Vec::new(),
            open_properties: false,
            attributes: Vec::new(),
        })
    }

    /// Sets the help text.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.0.description = text.into();
        self
    }

    /// Adds a property.
    pub fn property(mut self, property: impl Into<PropertySchema>) -> Self {
        self.0.properties.push(property.into());
        self
    }

    /// Accepts (and passes through unchecked) properties that are not declared.
    pub fn open_properties(mut self) -> Self {
        self.0.open_properties = true;
        self
    }

    /// Adds an attribute, readable with `get_attr`.
    pub fn attribute(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.0.attributes.push(AttributeSchema {
            name: name.into(),
            description: description.into(),
        });
        self
    }

    /// The finished schema.
    pub fn build(self) -> TypeSchema {
        self.0
    }
}

impl From<ResourceType> for TypeSchema {
    fn from(t: ResourceType) -> Self {
        t.0
    }
}

impl PluginInfo {
    /// A plugin serving no types yet; pass `env!("CARGO_PKG_NAME")`, `env!("CARGO_PKG_VERSION")`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            types: Vec::new(),
        }
    }

    /// Adds a served type.
    pub fn with_type(mut self, type_schema: impl Into<TypeSchema>) -> Self {
        self.types.push(type_schema.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builders_fill_the_schema() {
        let p = Property::string("sequence")
            .description("d")
            .required()
            .update_allowed()
            .immutable()
            .default(json!("letters"))
            .allowed_values(["letters", "digits"])
            .build();
        assert_eq!(p.name, "sequence");
        assert!(p.required && p.update_allowed && p.immutable);
        assert_eq!(p.default.as_deref(), Some(r#""letters""#));
        let Constraint::AllowedValues(v) = &p.constraints[0] else {
            panic!()
        };
        assert_eq!(v, &[r#""letters""#, r#""digits""#]);

        let info = PluginInfo::new("n", "1").with_type(
            ResourceType::new("T")
                .open_properties()
                .property(p)
                .attribute("a", "b"),
        );
        let t = &info.types[0];
        assert!(t.open_properties);
        assert_eq!(
            (t.properties.len(), t.attributes[0].name.as_str()),
            (1, "a")
        );
        let Constraint::Range(b) = Constraint::range(Some(1.0), None) else {
            panic!()
        };
        assert_eq!((b.min, b.max), (Some(1.0), None));
    }
}
