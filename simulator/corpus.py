"""The text banks the simulator's answers and thinking are drawn from, in English and Chinese.

Data only; ``simulator.script`` does the planning. Editing a sentence changes every answer that
draws it, which is why tests replan the expected text instead of hard-coding it.
"""

from __future__ import annotations

# Answer text: sentences (``{t}`` is the prompt's topic), headings, bullet terms, tables, code.

EN_SENTENCES = (
    "The short answer is that {t} depends on a few moving parts working together.",
    "It helps to think about {t} in terms of inputs, outputs and the state in between.",
    "Most problems with {t} come from hidden assumptions rather than from the code itself.",
    "A good first step is to measure what actually happens before changing anything.",
    "Keep the happy path simple and make the failure modes explicit.",
    "In practice, the defaults are reasonable for small projects but rarely for large ones.",
    "Latency usually matters more to users than raw throughput does.",
    "You can treat each request as an independent unit of work with its own deadline.",
    "When something goes wrong, a clear error message saves hours of guessing.",
    "The trade-off is between flexibility now and maintenance cost later.",
    "Caching helps, but only when the data changes less often than it is read.",
    "Streaming the result lets people start reading long before the work is finished.",
    "Small, well-named functions make {t} much easier to reason about.",
    "Tests that exercise real network behaviour catch bugs that mocks hide.",
    "If the numbers look too good, check that the benchmark measures the right thing.",
    "Document the decision, including the options you rejected and why.",
    "Timeouts should be explicit, generous for reads and short for connects.",
    "Retries are safe only for operations that can be repeated without side effects.",
    "The simplest design that handles the edge cases is usually the right one.",
    "Each component should own one responsibility and expose a narrow interface.",
    "Unicode, line endings and partial reads are where text protocols usually break.",
    "Back-pressure keeps a fast producer from overwhelming a slow consumer.",
    "For {t}, start with a working prototype and refine it with real feedback.",
    "Logging the request id on both sides makes tracing a single call straightforward.",
    "Configuration belongs in the environment, not in the source tree.",
    "Cancellation should propagate all the way to the work that costs money.",
    "A reader should be able to follow the data from the request to the response.",
    "Prefer boring technology for the parts that must never fail.",
)
EN_HEADINGS = (
    "Overview",
    "Key points",
    "How it works",
    "Practical tips",
    "Common pitfalls",
    "An example",
    "Trade-offs",
    "Next steps",
)
EN_TERMS = (
    "Latency",
    "Throughput",
    "Ordering",
    "Backpressure",
    "Retries",
    "Timeouts",
    "Caching",
    "Observability",
    "Cancellation",
    "Encoding",
)
EN_TABLE = (
    ("Approach", "Latency", "Complexity"),
    (
        ("Polling", "high", "low"),
        ("Long polling", "medium", "medium"),
        ("Server-sent events", "low", "low"),
        ("WebSockets", "low", "medium"),
        ("Batch jobs", "very high", "low"),
    ),
)
ZH_SENTENCES = (
    "简单来说，{t}取决于几个相互配合的部分。",
    "理解{t}的关键在于弄清输入、输出以及中间的状态。",
    "大多数问题并不是代码本身造成的，而是来自隐含的假设。",
    "第一步最好先测量实际发生了什么，再决定要改什么。",
    "让正常流程保持简单，同时把失败的情况写清楚。",
    "在实际项目中，默认配置适合小规模场景，但很少适合大规模场景。",
    "对用户来说，延迟通常比吞吐量更重要。",
    "可以把每个请求看作一个独立的工作单元，并给它设定自己的截止时间。",
    "出错的时候，一条清晰的错误信息可以节省大量排查时间。",
    "这里的权衡在于眼前的灵活性和以后的维护成本。",
    "缓存确实有帮助，但前提是数据变化的频率低于读取的频率。",
    "流式输出可以让人在任务完成之前就开始阅读结果。",
    "把函数写得短小并且命名清楚，会让{t}更容易理解。",
    "覆盖真实网络行为的测试，能发现模拟对象掩盖掉的问题。",
    "如果数字好得不像真的，就要检查基准测试是否测对了东西。",
    "记录下最终的决定，也记录下被否决的方案和原因。",
    "超时时间应该明确设置：读取可以宽松一些，连接要短一些。",
    "只有可以安全重复执行的操作才适合自动重试。",
    "能处理好边界情况的最简单设计，通常就是正确的设计。",
    "每个组件只负责一件事，并且对外只暴露很窄的接口。",
    "文本协议最容易出问题的地方，是编码、换行符和不完整的读取。",
    "背压机制可以防止快速的生产者压垮缓慢的消费者。",
    "对于{t}，建议先做出可用的原型，再根据真实反馈逐步改进。",
    "在两端都记录请求编号，追踪单次调用就会变得很直接。",
    "取消操作应该一直传递到真正产生费用的那部分工作。",
    "阿里云的超大规模语言模型也遵循同样的原则。",
)
ZH_HEADINGS = ("概述", "要点", "工作原理", "实践建议", "常见误区", "示例", "权衡取舍", "下一步")
ZH_TERMS = ("延迟", "吞吐量", "顺序", "背压", "重试", "超时", "缓存", "可观测性", "取消", "编码")
ZH_TABLE = (
    ("方案", "延迟", "复杂度"),
    (
        ("轮询", "较高", "低"),
        ("长轮询", "中等", "中等"),
        ("服务器推送事件", "低", "低"),
        ("WebSocket", "低", "中等"),
        ("批处理任务", "很高", "低"),
    ),
)
CODE_SNIPPETS = (
    (
        "python",
        "async def fetch(client, url):\n    response = await client.get(url, timeout=10.0)\n"
        "    response.raise_for_status()\n    return response.json()",
    ),
    (
        "python",
        "def chunks(items, size):\n    for start in range(0, len(items), size):\n"
        "        yield items[start:start + size]",
    ),
    (
        "javascript",
        "const source = new EventSource('/stream');\nsource.onmessage = (event) => {\n"
        "  console.log(JSON.parse(event.data));\n};",
    ),
    ("bash", "curl -N http://127.0.0.1:8001/v1/models \\\n  -H 'Authorization: Bearer sk-test'"),
    (
        "sql",
        "SELECT model, count(*) AS replies\nFROM chat_message\nGROUP BY model\n"
        "ORDER BY replies DESC;",
    ),
)
# Formulas (``math``): a paragraph with inline TeX, then a display block, as models write them.
EN_MATH = (
    "For a quadratic equation $ax^2 + bx + c = 0$ with $a \\neq 0$, the roots are\n\n"
    "$$\nx = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n$$",
    "The Gaussian integral shows why $e^{-x^2}$ matters, although it has no elementary "
    "antiderivative:\n\n$$\n\\int_{-\\infty}^{\\infty} e^{-x^2}\\,dx = \\sqrt{\\pi}\n$$",
)
ZH_MATH = (
    "一元二次方程 $ax^2 + bx + c = 0$（$a \\neq 0$）的求根公式是：\n\n"
    "$$\nx = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n$$",
    "高斯积分说明了 $e^{-x^2}$ 的重要性，尽管它没有初等原函数：\n\n"
    "$$\n\\int_{-\\infty}^{\\infty} e^{-x^2}\\,dx = \\sqrt{\\pi}\n$$",
)
# Words too generic to name the topic of a prompt.
EN_STOP = frozenset(
    [
        "about",
        "also",
        "because",
        "could",
        "does",
        "from",
        "have",
        "into",
        "just",
        "like",
        "more",
        "please",
        "should",
        "some",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "what",
        "when",
        "where",
        "which",
        "with",
        "would",
        "your",
        "explain",
        "tell",
        "give",
        "show",
        "write",
    ]
)


# Reasoning text: the opener names the topic, then thinking sentences follow in short paragraphs.

EN_THINK_OPENERS = (
    "Okay, the user asks about {t}.",
    "Okay, the user wants to know about {t}.",
    "Alright, the question is about {t}.",
)
EN_THINK = (
    "Let me consider what they actually need here.",
    "First, I should recall how {t} usually works.",
    "Hmm, there are a few angles to this.",
    "Maybe I should start with a short overview and then go into the details.",
    "Wait, I should also mention the common pitfalls.",
    "They might be new to {t}, so the explanation should stay clear.",
    "An example would help make this concrete.",
    "Let me think about the trade-offs involved.",
    "I should check whether there are edge cases worth pointing out.",
    "A small table could make the comparison easier to read.",
    "So the structure could be: overview, key points, an example, then next steps.",
    "I need to make sure the answer is accurate and not too long.",
    "Latency and throughput are easy to confuse, so I should keep them apart.",
    "Is there a simpler way to put this? Probably, if I lead with the main idea.",
    "Let me double-check that the code snippet actually runs.",
    "Okay, I think I have enough to write a good answer.",
)
ZH_THINK_OPENERS = ("嗯，用户问的是{t}。", "好的，用户想了解{t}。", "嗯，这个问题是关于{t}的。")
ZH_THINK = (
    "让我先想想他们真正需要的是什么。",
    "首先，我应该回忆一下{t}通常是怎么工作的。",
    "嗯，这个问题可以从几个角度来看。",
    "也许应该先给一个简短的概述，再展开细节。",
    "等等，我还应该提一下常见的误区。",
    "用户可能刚接触{t}，所以解释要清楚一些。",
    "举个例子会让内容更具体。",
    "我来考虑一下其中涉及的权衡。",
    "还要检查有没有值得指出的边界情况。",
    "用一个小表格来对比可能会更清楚。",
    "所以结构可以是：概述、要点、示例，然后是下一步。",
    "我需要确保回答准确，而且不要太长。",
    "延迟和吞吐量容易混淆，应该分开说明。",
    "有没有更简单的说法？先讲核心思路应该更好。",
    "好，我觉得已经可以组织回答了。",
)
