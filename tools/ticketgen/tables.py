"""Phrase tables of the ticket generator: slot values, customers and shared English sentences.

Pure data, read by :mod:`tools.ticketgen.slots` and :mod:`tools.ticketgen.generator`. The English
categories live in :mod:`tools.ticketgen.tables_customer` (accounts, money, orders, relationship)
and :mod:`tools.ticketgen.tables_product` (bugs, API, performance, integrations, features,
onboarding); the other languages in :mod:`tools.ticketgen.tables_foreign`.

The generator draws from one random stream and indexes these tuples with its draws, so the
tickets of a seed depend on every value AND its position: adding, removing or reordering an entry
changes the output (and the shipped examples/tickets.* must then be regenerated).

    from tools.ticketgen.tables import POOLS

    print(POOLS["carrier"])
"""

# Category names in the order the generator draws them (their weights are cumulated in this
# order): moving one changes the tickets of every seed. Each name is a key of exactly one of
# tables_customer.CUSTOMER_CATEGORIES and tables_product.PRODUCT_CATEGORIES.
CATEGORY_ORDER = ("login", "billing", "bug", "feature_request", "shipping", "account_deletion",
                  "api_error", "performance", "integration", "onboarding", "escalation",
                  "thanks")

# --------------------------------------------------------------------------------------------
# Slot values ("{product}", "{carrier}"...), and what the slot makers draw from.
# --------------------------------------------------------------------------------------------

POOLS: dict[str, tuple[str, ...]] = {
    "product": ("the dashboard", "the mobile app", "the desktop app", "the web app",
                "the reporting module", "the shared inbox", "the admin console",
                "the customer portal", "the calendar view"),
    "feature": ("CSV export", "two-factor authentication", "calendar sync", "bulk edit",
                "saved filters", "Kanban board", "custom fields", "SSO", "webhooks",
                "audit log", "scheduled reports", "search", "invoice PDFs", "user roles",
                "recurring tasks", "time tracking", "automation rules", "email templates",
                "mobile widget", "file attachments", "dashboard sharing"),
    "wish": ("dark mode", "bulk editing for tasks", "a Linux desktop app",
             "custom report templates", "more keyboard shortcuts", "an offline mode",
             "more granular user roles", "Gantt charts", "scheduled CSV exports",
             "recurring invoices", "SCIM provisioning", "multi-currency support",
             "a read-only guest role", "two-way calendar sync", "conditional fields in forms",
             "an EU data residency option", "per-project email signatures",
             "webhook retries with a dead-letter view", "a Spanish interface"),
    "device": ("iPhone 15", "iPhone 13 mini", "Pixel 8", "Galaxy S23", "iPad Air",
               "Galaxy Tab S9", "Moto G84", "OnePlus 12"),
    "integration": ("Salesforce", "Slack", "HubSpot", "Zapier", "Shopify", "Jira",
                    "Google Calendar", "Microsoft Teams", "QuickBooks", "Stripe", "Outlook",
                    "Xero", "Intercom", "Google Drive", "Mailchimp"),
    "idp": ("Okta", "Azure AD", "Google Workspace", "OneLogin", "JumpCloud", "Auth0"),
    "competitor": ("Deskwise", "TaskHarbor", "Orbitly", "Cloudleaf", "Helpwell", "Trackr"),
    "carrier": ("UPS", "FedEx", "DHL", "USPS", "Royal Mail", "DPD", "GLS"),
    "hardware": ("the Nimbus Hub", "the card reader", "the starter kit", "the barcode scanner",
                 "the label printer", "the desk phone", "the receipt printer",
                 "two replacement batteries"),
    "city": ("Austin", "Toronto", "Dublin", "Berlin", "Sydney", "Denver", "Leeds", "Chicago",
             "Singapore", "Cape Town", "Auckland", "Vancouver", "Manchester", "Boston"),
    "street": ("1420 Elm Street", "88 Harbour Road", "12 Queen's Walk", "700 Market Ave",
               "5 Birch Lane", "301 Lakeview Dr", "42 Station Road", "19 Mill Street"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "duration": ("two days", "about an hour", "three days", "a week", "since yesterday",
                 "most of the morning", "48 hours", "almost two weeks", "four hours"),
    "agent": ("Priya", "Marcus", "Elena", "Tom", "Aisha", "Jonas", "Mei", "Carlos", "Hannah"),
    "past_issue": ("the billing mix-up", "our SSO setup", "the import problem",
                   "the locked account", "the missing invoices", "the webhook issue",
                   "the duplicate contacts", "our data migration", "the broken export"),
    "auth_error": ("Invalid credentials", "AUTH-1042: session expired",
                   "SAML response signature is invalid", "Too many login attempts",
                   "The verification code is incorrect", "User is not assigned to this app",
                   "AUTH-2001: account locked", "Something went wrong, please try again"),
    "app_error": ("Something went wrong", "E_TOKEN_EXPIRED", "ERR_SYNC_CONFLICT",
                  "Request failed with status code 500", ("ValidationError: field 'due_date' "
                  "is required"), "ECONNRESET", "Quota exceeded for workspace",
                  "invalid_grant: refresh token revoked", "ERR_PAYLOAD_TOO_LARGE",
                  "Unexpected token < in JSON at position 0", "DB_TIMEOUT (code 7)"),
    "http_error": ("500 Internal Server Error", "502 Bad Gateway", "503 Service Unavailable",
                   "504 Gateway Timeout", "401 Unauthorized", "403 Forbidden", "404 Not Found",
                   "409 Conflict", "422 Unprocessable Entity", "429 Too Many Requests",
                   "400 Bad Request"),
    "endpoint": ("/v2/tickets", "/v2/contacts", "/v1/invoices", "/v2/webhooks", "/v2/exports",
                 "/v2/users/me", "/v2/search", "/v2/projects", "/v2/tasks/bulk",
                 "/v1/reports/summary", "/v2/attachments", "/v2/events"),
    "method": ("GET", "GET", "POST", "POST", "PUT", "PATCH", "DELETE"),
    "sdk": ("Python", "Node.js", "Java", "Go", "Ruby", "PHP", ".NET"),
    "url_path": ("/settings/billing", "/settings/security", "/reports/weekly", "/inbox",
                 "/projects", "/admin/users", "/integrations", "/login", "/exports",
                 "/account/profile", "/dashboard", "/tasks/board"),
    "tz": ("CET", "EST", "PST", "GMT", "AEST", "IST"),
    "billing_entity": ("NIMBUSDESK* SUBSCR", "NMB*CLOUD 8445551234", "NIMBUS SOFTWARE LTD"),
    "js_prop": ("map", "length", "id", "forEach", "name", "getTime", "status"),
    "js_fn": ("renderGrid", "useBoardState", "formatRow", "onSaveClick", "loadFilters",
              "InvoiceTable.render"),
    "py_fn": ("push_contacts", "sync_invoices", "fetch_page", "export_tasks", "refresh_token"),
    "py_file": ("sync.py", "jobs/nightly.py", "nimbus_client.py", "worker/tasks.py"),
    "java_cls": ("ContactSync", "InvoiceExporter", "NightlyJob", "WebhookRelay"),
    "title": ("Operations Manager", "IT Administrator", "Head of Support", "Office Manager",
              "CTO", "Finance Lead", "Founder", "Customer Success Lead"),
}

# Browser and operating system are drawn as a pair so that they agree ("Safari on iOS").
SETUPS = (
    ("Chrome 124", "Windows 11"), ("Chrome 126", "macOS Sonoma"), ("Firefox 125", "Ubuntu 22.04"),
    ("Safari 17.4", "macOS Sonoma"), ("Safari", "iOS 17.4"), ("Edge 124", "Windows 11"),
    ("Edge", "Windows 10"), ("Chrome", "Android 14"), ("Chrome", "ChromeOS"),
    ("Firefox ESR", "Windows 10"), ("Brave", "macOS Sequoia"), ("Firefox 126", "macOS Sequoia"),
)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")

ERROR_BODIES = (
    ("rate_limited", "Rate limit exceeded, retry later"),
    ("internal_error", "An unexpected error occurred"),
    ("invalid_request", "Missing required parameter: cursor"),
    ("unauthorized", "The access token is invalid or has expired"),
    ("conflict", "Resource was modified by another request"),
    ("payload_too_large", "Request body exceeds 10 MB"),
)

# --------------------------------------------------------------------------------------------
# English sentences any category may add, and the attachments some categories quote.
# --------------------------------------------------------------------------------------------

EN_TRIED = (
    "I already restarted everything, no luck.",
    "I searched the help center but didn't find anything.",
    "A colleague on the same account has the same issue.",
    "I tried on a different computer with the same result.",
    "I've already contacted our own IT team and they couldn't find anything either.",
)
EN_URGENCY = (
    "This is blocking our team.",
    "Not super urgent, but I'd appreciate an answer this week.",
    "We have a customer demo on {weekday}, so the sooner the better.",
    "This is quite urgent for us.",
    "It's not critical, just annoying.",
)
EN_CLOSINGS = (
    "Thanks in advance.", "Any help would be appreciated.",
    "Please let me know if you need more information.", "Looking forward to your reply.",
    "Can someone get back to me today?", "Thanks for looking into it.", "Cheers.",
)
EN_GREETINGS = ("Hi,", "Hello,", "Hi team,", "Hey there,", "Good morning,", "Dear support,",
                 "Hi support,", "Hello Nimbus team,")
EN_CHAT_GREETINGS = ("hi", "hello", "hey", "Hi there!", "hi, quick question")
EN_SIGNOFFS = ("Thanks,\n{first}", "Best regards,\n{name}", "Cheers,\n{first}", "Best,\n{first}",
                "Regards,\n{name}", "Thank you,\n{name}")
EN_COMPANY_SIGNOFFS = ("Regards,\n{name}\n{company}", "Best,\n{name}\n{title}, {company}",
                        "Kind regards,\n{name} | {title}\n{company}")

ATTACHMENTS_UI = (
    ("Console output:\n\nUncaught TypeError: Cannot read properties of undefined (reading "
    "'{js_prop}')\n    at {js_fn} (app.{hash8}.js:2:{col})\n    at HTMLButtonElement.<anonymous> "
    "(vendor.{hash8}.js:1:{line2})"),
    ("From the browser console:\n\nGET https://api.nimbusdesk.com{endpoint} {http_status} "
    "({ms_slow} ms)\nError: {app_error}\n    at fetchJson (api.{hash8}.js:1:{col})"),
)
ATTACHMENTS_API = (
    ("Traceback from our sync job:\n\nTraceback (most recent call last):\n  File "
    "\"/srv/app/{py_file}\", line {line}, in {py_fn}\n    resp.raise_for_status()\n  File "
    "\"/usr/lib/python3.11/site-packages/requests/models.py\", line 1021, in raise_for_status\n"
    "    raise HTTPError(http_error_msg, response=self)\nrequests.exceptions.HTTPError: "
    "{http_error} for url: https://api.nimbusdesk.com{endpoint}"),
    ("Stack trace:\n\ncom.nimbusdesk.client.ApiException: {http_error}\n\tat "
    "com.nimbusdesk.client.ApiClient.invoke(ApiClient.java:{line})\n\tat "
    "com.example.sync.{java_cls}.run({java_cls}.java:{line2})\n\tat "
    "java.base/java.lang.Thread.run(Thread.java:1583)"),
    "Response body:\n\n{error_json}",
    ("$ curl -i -X {method} https://api.nimbusdesk.com{endpoint}\nHTTP/2 {http_status}\n"
    "x-request-id: {request_id}\nretry-after: {retry_after}"),
    ("From our logs:\n\n{created_at} ERROR [sync-worker-{n_small}] {method} {endpoint} -> "
    "{http_error} ({ms_slow} ms) request_id={request_id}"),
)
ATTACHMENTS = {"ui": ATTACHMENTS_UI, "api": ATTACHMENTS_API}

# --------------------------------------------------------------------------------------------
# Customers.
# --------------------------------------------------------------------------------------------

NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("James", "Olivia", "Liam", "Emma", "Noah", "Ava", "Sophia", "Mason", "Isabella", "Ethan",
         "Mia", "Lucas", "Amelia", "Aiden", "Harper", "Priya", "Arjun", "Wei", "Mei", "Kenji",
         "Yuki", "Fatima", "Omar", "Aisha", "Kwame", "Chloe", "Daniel", "Grace", "Samuel", "Zoe",
         "Ryan", "Hannah", "Jack", "Leah", "Nathan", "Ruby", "Owen", "Ivy", "Caleb", "Nora",
         "Diego", "Sofia", "Tariq", "Ananya", "Connor", "Megan", "Tyler", "Rachel"),
        ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
         "Anderson", "Thomas", "Moore", "Martin", "Thompson", "White", "Harris", "Clark", "Lewis",
         "Walker", "Hall", "Young", "Patel", "Shah", "Chen", "Wang", "Nguyen", "Kim", "Tanaka",
         "Okafor", "Mensah", "Hussain", "Khan", "O'Brien", "Murphy", "Kelly", "Campbell",
         "Stewart", "Reid", "Fraser", "Cohen", "Rossi", "Novak", "Kowalski", "Lindqvist"),
    ),
    "es": (
        ("Lucía", "María", "Sofía", "Carmen", "Alejandro", "Javier", "Pablo", "Diego", "Valentina",
         "Andrés", "Camila", "Mateo", "Elena", "Raúl", "Paula"),
        ("García", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Ruiz",
         "Díaz", "Moreno", "Álvarez", "Romero", "Torres", "Navarro"),
    ),
    "fr": (
        ("Camille", "Léa", "Manon", "Chloé", "Hugo", "Louis", "Lucas", "Jules", "Inès", "Théo",
         "Élodie", "Mathieu", "Sébastien", "Amélie"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy", "Moreau",
         "Lefèvre", "Girard", "Faure", "Rousseau", "Lambert"),
    ),
    "de": (
        ("Jonas", "Lukas", "Felix", "Maximilian", "Leonie", "Anna", "Lena", "Sophie", "Jan",
         "Katrin", "Jürgen", "Sabine", "Tobias", "Hannah"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Koch", "Richter", "Wolf", "Schäfer"),
    ),
    "pt": (
        ("João", "Ana", "Pedro", "Mariana", "Lucas", "Beatriz", "Gabriel", "Larissa", "Rafael",
         "Fernanda", "Thiago", "Juliana", "Gonçalo", "Inês"),
        ("Silva", "Santos", "Oliveira", "Souza", "Pereira", "Costa", "Rodrigues", "Almeida",
         "Nascimento", "Lima", "Araújo", "Ferreira", "Carvalho", "Gomes"),
    ),
}

FREE_DOMAINS: dict[str, tuple[str, ...]] = {
    "en": ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "hotmail.com"),
    "es": ("gmail.com", "hotmail.es", "yahoo.es", "outlook.es"),
    "fr": ("gmail.com", "orange.fr", "free.fr", "laposte.net", "outlook.fr"),
    "de": ("gmail.com", "gmx.de", "web.de", "t-online.de", "posteo.de"),
    "pt": ("gmail.com", "uol.com.br", "hotmail.com", "sapo.pt", "terra.com.br"),
}

COMPANIES = (
    "Acme Logistics", "Bluefin Health", "Northwind Traders", "Brightpath Learning",
    "Copperleaf Dental", "Harbor & Finch", "Summit Outdoor Co", "Pinecrest Realty",
    "Lumen Analytics", "Redwood Legal", "Quantum Bakery", "Atlas Freight", "Greenline Energy",
    "Silverstone Clinics", "Urban Nest Interiors", "Kestrel Security", "Maple & Oak Studio",
    "Orbit Travel", "Tidewater Marine", "Vantage Recruiting", "Blue Ridge Coffee",
    "Helix Biotech", "Foxglove Florists", "Ironclad Fitness", "Sunrise Home Care",
    "Granite Peak Software", "Coastal Print Works", "Nordlicht GmbH", "Soluciones Ibéricas SL",
    "Atelier Lumière SARL", "Vila Verde Comércio", "Polaris Events", "Riverbend Veterinary",
)

PLAN_NAMES = {"free": "Free", "pro": "Pro", "enterprise": "Enterprise"}
