//! Rendering a template with a send's data: strict, capped, escaped for
//! email HTML, with a loop budget per render.

use super::*;

/// Why a template could not be rendered. Messages name the template field and
/// the variable, never the data's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The requested locale is not a locale tag.
    #[error("is not a locale tag such as `en`, `en-US` or `pt-BR`")]
    Locale,
    /// The template has no content for the channel in any locale.
    #[error("the template has no {} content", .0.as_str())]
    NoContent(Channel),
    /// A variable the data does not have (strict mode).
    #[error("{field}: {}", missing_reason(.variable, *.at))]
    MissingVariable {
        /// The template field, e.g. `locales.fr.email.subject`.
        field: String,
        /// The variable's path, e.g. `patient.name` (unknown for some helpers).
        variable: Option<String>,
        /// Line and column in the field.
        at: Option<(usize, usize)>,
    },
    /// The field renders to something it may not be: too long, a subject
    /// with a line break, an unsafe link, or more output than allowed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The template field.
        field: String,
        /// Why.
        reason: String,
    },
}

pub(super) fn missing_reason(variable: &Option<String>, at: Option<(usize, usize)>) -> String {
    let at = at
        .map(|(l, c)| format!(" (line {l}, column {c})"))
        .unwrap_or_default();
    match variable {
        Some(v) => format!("uses the variable `{v}`, which the data does not have{at}"),
        None => format!("looks up a value the data does not have{at}"),
    }
}

impl RenderError {
    /// The template field the error is about (`locale` for a bad locale,
    /// `channels` for a missing channel).
    pub fn field(&self) -> &str {
        match self {
            RenderError::Locale => "locale",
            RenderError::NoContent(_) => "channels",
            RenderError::MissingVariable { field, .. } | RenderError::Invalid { field, .. } => {
                field
            }
        }
    }

    /// Why, without the field.
    pub fn reason(&self) -> String {
        match self {
            RenderError::MissingVariable { variable, at, .. } => missing_reason(variable, *at),
            RenderError::Invalid { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// One channel's rendered content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The channel.
    pub channel: Channel,
    /// The locale whose content was used.
    pub locale: String,
    /// The content, as a direct send on the channel has it.
    pub content: Content,
}

/// The locales tried for `requested`, best first: the exact tag, its
/// language, then the template's default.
pub(super) fn candidates(
    template: &Template,
    requested: Option<&str>,
) -> Result<Vec<String>, RenderError> {
    let mut out = Vec::new();
    if let Some(raw) = requested {
        let tag = canonical_locale(raw).ok_or(RenderError::Locale)?;
        let language = tag.split('-').next().unwrap_or_default().to_owned();
        out.push(tag);
        out.push(language);
    }
    out.push(template.default_locale.clone());
    out.dedup();
    Ok(out)
}

/// Renders `template` for `channel` with `data`, in the first locale of
/// `locale` (exact tag), its language, and the default locale that has the
/// channel.
pub fn render(
    template: &Template,
    channel: Channel,
    locale: Option<&str>,
    data: &Value,
) -> Result<Rendered, RenderError> {
    render_with(template, None, channel, locale, data)
}

/// Each template string of a template, by field: registered in its
/// [`Prepared`]'s registry for its kind, or why it does not compile.
pub(super) type CompiledFields = HashMap<String, Result<(), String>>;

/// A template with every string compiled once, for rendering it for many
/// recipients (a batch chunk, a CSV file, a cached template). Its strings
/// are registered once in two registries (email HTML escaped, everything
/// else not) that every render shares; templates cannot name each other
/// (partials are refused), so a render still sees only the field it renders
/// and its own data, with its own loop budget and output limits. The results
/// are the same as [`render`]'s.
pub struct Prepared {
    template: Template,
    compiled: CompiledFields,
    /// The registries the compiled fields are in: plain text, email HTML.
    registries: [Handlebars<'static>; 2],
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("template", &self.template.key)
            .field("fields", &self.compiled.len())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Compiles every string of every locale and channel of `template`.
    pub fn new(template: Template) -> Self {
        let mut compiled = HashMap::new();
        let mut registries = [registry(false), registry(true)];
        for (tag, content) in &template.locales {
            for &channel in Channel::ALL {
                for (path, source, kind) in content.strings(channel) {
                    let field = format!("locales.{tag}.{}.{path}", channel.as_str());
                    let entry = compile(source, kind.html).map(|mut c| {
                        instrument(&mut c, &TICK_TEMPLATE);
                        registries[usize::from(kind.html)].register_template(&field, c);
                    });
                    compiled.insert(field, entry);
                }
            }
        }
        Self {
            template,
            compiled,
            registries,
        }
    }

    /// The template.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Renders like [`render`], without compiling anything again.
    pub fn render(
        &self,
        channel: Channel,
        locale: Option<&str>,
        data: &Value,
    ) -> Result<Rendered, RenderError> {
        render_with(&self.template, Some(self), channel, locale, data)
    }
}

/// A registry in strict mode with the iteration helper, escaping values
/// for email HTML or not at all.
pub(super) fn registry(html: bool) -> Handlebars<'static> {
    let mut hbs = Handlebars::new();
    hbs.set_strict_mode(true);
    hbs.register_helper(TICK, Box::new(Tick));
    if html {
        hbs.register_escape_fn(handlebars::html_escape);
    } else {
        hbs.register_escape_fn(handlebars::no_escape);
    }
    hbs
}

pub(super) fn render_with(
    template: &Template,
    compiled: Option<&Prepared>,
    channel: Channel,
    locale: Option<&str>,
    data: &Value,
) -> Result<Rendered, RenderError> {
    let (tag, content) = candidates(template, locale)?
        .into_iter()
        .find_map(|tag| {
            let content = template.locales.get(&tag).filter(|c| c.has(channel))?;
            Some((tag, content))
        })
        .ok_or(RenderError::NoContent(channel))?;
    let base = format!("locales.{tag}.{}", channel.as_str());
    let mut r = Renderer::new(data, compiled);
    let field = |path: &str| format!("{base}.{path}");
    let content = match channel {
        Channel::Email => {
            let e = content
                .email
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let subject_field = field("subject");
            let subject = r.text(&subject_field, &e.subject, Kind::SUBJECT)?;
            let subject = Subject::parse(&subject).map_err(|e| RenderError::Invalid {
                field: subject_field,
                reason: format!("renders to a subject that {}", e.0),
            })?;
            let html = r.optional(&field("html"), e.html.as_deref(), Kind::HTML)?;
            let text = r.optional(&field("text"), e.text.as_deref(), Kind::TEXT)?;
            if html.is_none() && text.is_none() {
                return Err(invalid(
                    field("text"),
                    "`text` and `html` both render empty",
                ));
            }
            Content::Email(EmailContent {
                subject,
                text,
                html,
            })
        }
        Channel::Sms => {
            let s = content
                .sms
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let f = field("body");
            let body = r.text(&f, &s.body, Kind::SMS)?;
            non_empty(&f, &body)?;
            max_chars(&f, &body, MAX_SMS_CHARS)?;
            Content::Sms(SmsContent { body })
        }
        Channel::Push => {
            let t = content
                .push
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let f = field("title");
            let title = r.text(&f, &t.title, Kind::LINE)?;
            one_line(&f, &title)?;
            let body = r.optional(&field("body"), t.body.as_deref(), Kind::TEXT)?;
            let data = r.data(&field("data"), &t.data)?;
            Content::Push(PushContent { title, body, data })
        }
        Channel::WhatsApp => {
            let w = content
                .whatsapp
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            match (&w.text, &w.template_name, &w.language) {
                (Some(text), _, _) => {
                    let f = field("text");
                    let text = r.text(&f, text, Kind::TEXT)?;
                    non_empty(&f, &text)?;
                    max_chars(&f, &text, MAX_WHATSAPP_TEXT_CHARS)?;
                    Content::WhatsApp(WhatsAppContent::Text { text })
                }
                (None, Some(name), Some(language)) => {
                    let mut parameters = Vec::with_capacity(w.parameters.len());
                    for (i, p) in w.parameters.iter().enumerate() {
                        let f = field(&format!("parameters[{i}]"));
                        let value = r.text(&f, p, Kind::LINE)?;
                        one_line(&f, &value)?;
                        whatsapp_parameter(&value).map_err(|e| {
                            invalid(
                                &f,
                                format!("renders to a parameter WhatsApp refuses: it {e}"),
                            )
                        })?;
                        parameters.push(value);
                    }
                    Content::WhatsApp(WhatsAppContent::Template {
                        template_name: name.clone(),
                        language: language.clone(),
                        parameters,
                    })
                }
                _ => {
                    return Err(invalid(
                        base,
                        "has neither `text` nor `template_name` with `language`",
                    ));
                }
            }
        }
        Channel::InApp => {
            let a = content
                .inapp
                .as_ref()
                .ok_or(RenderError::NoContent(channel))?;
            let f = field("title");
            let title = r.text(&f, &a.title, Kind::LINE)?;
            one_line(&f, &title)?;
            max_chars(&f, &title, MAX_TITLE_CHARS)?;
            let f = field("body");
            let body = r.optional(&f, a.body.as_deref(), Kind::TEXT)?;
            if let Some(b) = &body {
                max_chars(&f, b, MAX_BODY_CHARS)?;
            }
            let f = field("action_url");
            let action_url = r.optional(&f, a.action_url.as_deref(), Kind::LINE)?;
            if let Some(u) = &action_url
                && !action_url_ok(u)
            {
                return Err(invalid(
                    f,
                    "must render to an http(s) URL or a path starting with `/`, at most 2048 characters",
                ));
            }
            let data = r.data(&field("data"), &a.data)?;
            Content::InApp(InAppContent {
                title,
                body,
                action_url,
                data: data
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            })
        }
    };
    Ok(Rendered {
        channel,
        locale: tag,
        content,
    })
}

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RenderError {
    RenderError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(super) fn non_empty(field: &str, value: &str) -> Result<(), RenderError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "renders empty"));
    }
    Ok(())
}

pub(super) fn one_line(field: &str, value: &str) -> Result<(), RenderError> {
    non_empty(field, value)?;
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "renders to more than one line or to control characters",
        ));
    }
    Ok(())
}

pub(super) fn max_chars(field: &str, value: &str, max: usize) -> Result<(), RenderError> {
    if value.chars().count() > max {
        return Err(invalid(
            field,
            format!("renders to more than {max} characters"),
        ));
    }
    Ok(())
}

/// The helper [`instrument`] puts first in every `{{#each}}` body: it writes
/// nothing and charges one iteration to the budget of the render running on
/// this thread ([`ITERATIONS`]).
pub(super) const TICK: &str = "__iteration";

/// `{{__iteration}}`, compiled.
pub(super) static TICK_TEMPLATE: LazyLock<Compiled> =
    LazyLock::new(|| Compiled::compile(&format!("{{{{{TICK}}}}}")).unwrap_or_default());

thread_local! {
    /// The iteration budget of the field rendering on this thread: the
    /// iterations left and whether one was refused. A render is synchronous,
    /// so the renderer sets it before each field and reads it back after.
    static ITERATIONS: Cell<(usize, bool)> = const { Cell::new((0, false)) };
}

pub(super) struct Tick;

impl HelperDef for Tick {
    fn call<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        let (left, _) = ITERATIONS.get();
        if left == 0 {
            ITERATIONS.set((0, true));
            return Err(RenderErrorReason::Other("the iteration budget is spent".into()).into());
        }
        ITERATIONS.set((left - 1, false));
        Ok(())
    }
}

/// Puts `tick` (a compiled `{{__iteration}}`) first in the body of every
/// `{{#each}}`, so every iteration is charged, however the loops nest.
pub(super) fn instrument(t: &mut Compiled, tick: &Compiled) {
    for e in &mut t.elements {
        if let TemplateElement::HelperBlock(h) = e {
            let each = h.name.as_name() == Some("each");
            if let Some(body) = &mut h.template {
                instrument(body, tick);
                if each {
                    body.elements.splice(0..0, tick.elements.iter().cloned());
                    body.mapping.splice(0..0, tick.mapping.iter().cloned());
                }
            }
            if let Some(inverse) = &mut h.inverse {
                instrument(inverse, tick);
            }
        }
    }
}

/// Collects a field's output, refusing to grow past `limit`.
pub(super) struct Capped {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("the output limit is reached"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One render: a prepared template's shared registries, or for a template
/// not prepared a fresh registry that only ever holds the fields it renders.
pub(super) struct Renderer<'c> {
    /// The registry of a template not prepared, made at its first field.
    own: Option<Handlebars<'static>>,
    ctx: Context,
    /// Iterations left to the render's loops, and whether one was refused.
    budget: (usize, bool),
    /// The template's strings compiled ahead, when it was prepared.
    prepared: Option<&'c Prepared>,
    /// Output bytes left for the remaining fields.
    output_left: usize,
}

impl fmt::Debug for Renderer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<'c> Renderer<'c> {
    fn new(data: &Value, prepared: Option<&'c Prepared>) -> Self {
        Self {
            own: None,
            ctx: Context::from(data.clone()),
            budget: (MAX_ITERATIONS, false),
            prepared,
            output_left: MAX_RENDER_BYTES,
        }
    }

    /// Renders one field.
    fn text(&mut self, field: &str, source: &str, kind: Kind) -> Result<String, RenderError> {
        if source.len() > MAX_FIELD_BYTES {
            return Err(invalid(
                field,
                format!("must be at most {MAX_FIELD_BYTES} bytes"),
            ));
        }
        let hbs = match self.prepared.map(|p| (p, p.compiled.get(field))) {
            Some((p, Some(Ok(())))) => &p.registries[usize::from(kind.html)],
            Some((_, Some(Err(reason)))) => return Err(invalid(field, reason.clone())),
            _ => {
                let mut compiled =
                    compile(source, kind.html).map_err(|reason| invalid(field, reason))?;
                instrument(&mut compiled, &TICK_TEMPLATE);
                let hbs = self.own.get_or_insert_with(|| registry(false));
                hbs.register_template(field, compiled);
                if kind.html {
                    hbs.register_escape_fn(handlebars::html_escape);
                } else {
                    hbs.register_escape_fn(handlebars::no_escape);
                }
                &*hbs
            }
        };
        let mut out = Capped {
            buf: Vec::new(),
            limit: MAX_OUTPUT_BYTES.min(self.output_left),
            overflowed: false,
        };
        ITERATIONS.set(self.budget);
        let rendered = hbs.render_with_context_to_write(field, &self.ctx, &mut out);
        self.budget = ITERATIONS.get();
        self.output_left -= out.buf.len();
        match rendered {
            Ok(()) => {
                let text = String::from_utf8(out.buf)
                    .map_err(|_| invalid(field, "renders invalid UTF-8"))?;
                // Postgres stores no NUL in text or JSON: refuse it here, by
                // field, rather than fail the insert.
                if text.contains('\0') {
                    return Err(invalid(field, "renders a NUL character (\\u0000)"));
                }
                Ok(text)
            }
            Err(_) if out.overflowed && out.limit < MAX_OUTPUT_BYTES => Err(invalid(
                field,
                format!("takes the render past {MAX_RENDER_BYTES} bytes in all"),
            )),
            Err(_) if out.overflowed => Err(invalid(
                field,
                format!("renders to more than {MAX_OUTPUT_BYTES} bytes"),
            )),
            Err(_) if self.budget.1 => Err(invalid(
                field,
                format!("loops more than {MAX_ITERATIONS} times in one render"),
            )),
            Err(e) => Err(match e.reason() {
                RenderErrorReason::MissingVariable(variable) => RenderError::MissingVariable {
                    field: field.to_owned(),
                    variable: variable.clone(),
                    at: e.line_no.zip(e.column_no),
                },
                other => invalid(field, format!("cannot be rendered: {other}")),
            }),
        }
    }

    /// Renders an optional field; one that renders blank counts as absent.
    fn optional(
        &mut self,
        field: &str,
        source: Option<&str>,
        kind: Kind,
    ) -> Result<Option<String>, RenderError> {
        let Some(source) = source else {
            return Ok(None);
        };
        let value = self.text(field, source, kind)?;
        Ok((!value.trim().is_empty()).then_some(value))
    }

    /// Renders every value of a `data` object.
    fn data(
        &mut self,
        base: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RenderError> {
        let mut out = BTreeMap::new();
        for (k, v) in data {
            let value = self.text(&format!("{base}.{k}"), v, Kind::TEXT)?;
            out.insert(k.clone(), value);
        }
        Ok(out)
    }
}
